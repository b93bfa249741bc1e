"""physics_lm: controlled Physics of Language Models experiments in JAX/Flax."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="physics_lm",
    version="0.1.0",
    description="Physics of Language Models experiments (CFG, iGSM) in JAX/Flax",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    # configs/ is installed as physics_lm.configs, so configs import each other as modules;
    # launch/ as physics_lm.launch (`python -m physics_lm.launch.aot`, `...launch.sweep`).
    packages=[*find_packages(include=["physics_lm", "physics_lm.*"]), "physics_lm.configs",
              "physics_lm.launch"],
    package_dir={"physics_lm.configs": "configs", "physics_lm.launch": "launch"},
    package_data={
        "physics_lm": ["data/cfg/*.json", "data/igsm/text/*.json", "data/igsm/text/*.md",
                       "data/tfds/*.md"],
        "physics_lm.launch": ["*.sh"],
    },
    install_requires=[
        "jax>=0.10,<0.12",
        "jaxlib>=0.10,<0.12",
        "flax>=0.12,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "numpy>=1.26,<3",
        "ml_collections>=1.0,<2",
        "absl-py>=2.1,<3",
        # The frozen evaluation sets (physics_lm/data/tfds: TFDS builders).
        "tensorflow-datasets>=4.9.7,<5",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.8",
    ],
    extras_require={
        # setuptools: tests/test_packaging.py builds a wheel offline (--no-build-isolation).
        "test": ["pytest>=8", "pytest-xdist>=3", "scipy>=1.11", "setuptools>=70.1"],
        "lint": ["ruff>=0.6"],
        "bench": ["torch>=2.3", "transformers>=4.40"],
        # The TPU compiler (libtpu, ~1.3 GB) for `python -m physics_lm.launch.aot --topology=v5p-32`
        # on a machine without a TPU; pinned to the jax release it was built with.
        "tpu": ["jax[tpu]>=0.10,<0.12"],
    },
    entry_points={"console_scripts": ["physics-lm=physics_lm.main:entry"]},
)
