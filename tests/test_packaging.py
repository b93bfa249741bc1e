"""A wheel built from the repository ships every subpackage, data file and config."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_subpackage_and_data_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "physics_lm", src / "physics_lm", ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs", ignore=ignore)
    shutil.copytree(ROOT / "launch", src / "launch", ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("physics_lm-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())

    want = set()
    for path in (src / "physics_lm").rglob("*"):
        if path.is_file():
            want.add(path.relative_to(src).as_posix())
    for folder in ("configs", "launch"):  # installed as physics_lm.configs, physics_lm.launch
        for path in (src / folder).glob("*.py"):
            want.add(f"physics_lm/{folder}/{path.name}")
    missing = sorted(want - shipped)
    assert not missing, missing
    packages = {p.parent.relative_to(src).as_posix() for p in (src / "physics_lm").rglob("*.py")}
    assert {"physics_lm/train", "physics_lm/data/igsm", "physics_lm/probing"} <= packages
    assert all(f"{p}/__init__.py" in shipped for p in packages), packages
