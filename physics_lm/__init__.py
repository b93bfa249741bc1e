"""physics_lm: controlled *Physics of Language Models* experiments in JAX/Flax."""

__version__ = "0.1.0"
