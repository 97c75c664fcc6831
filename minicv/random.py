"""The engine's one random number generator (parameter initialisation), seeded by manual_seed."""

from __future__ import annotations

from typing import Any

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generator that initialises parameters, so models are reproducible."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _rng


def get_state() -> dict[str, Any]:
    return dict(_rng.bit_generator.state)


def set_state(state: dict) -> None:
    _rng.bit_generator.state = state


def is_state(state: object) -> bool:
    """Whether ``set_state`` accepts ``state`` (tried on a scratch generator, so nothing changes)."""
    try:
        type(_rng.bit_generator)().state = state  # type: ignore[assignment]  # any object: the setter checks it
    except (TypeError, KeyError, ValueError, OverflowError):
        return False
    return True
