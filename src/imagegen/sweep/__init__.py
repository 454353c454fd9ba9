"""Choosing settings by experiment: `imagegen sweep`, an optuna study over a space file's settings (space.py), each
trial an ordinary run (trial.py), in a real database, resumable (study.py), with its table, best settings and
pictures (outputs.py)."""

from .space import Space, read_space
from .study import sweep

__all__ = ["Space", "read_space", "sweep"]
