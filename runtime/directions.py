"""Latent editing directions: load, normalise, apply (torch-free).

A direction is one `.npy` per attribute, shape (18, 512) float64 in the W+ space of the 1024
generator. The edit is w + α·n̂ with n̂ = n / ‖n‖_F over the whole array (docs/design.md §1), α = 20.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deghost.attributes import ATTRIBUTES, find_attribute

PAPER_ATTRIBUTES = tuple(ATTRIBUTES)  # the paper's four, in its order
DEFAULT_ALPHA = 20.0  # the paper's edit strength; every default α in deghost is this one


class DirectionError(ValueError):
    """A direction file that cannot be used."""


def direction_info_path(direction: str | Path) -> Path:
    """The JSON `deghost train direction` writes beside `<name>.npy`: `<name>.json`."""
    return Path(direction).with_suffix(".json")


def direction_class(path: str | Path) -> int | None:
    """The Diff-CAM class a direction file edits: its JSON's `class_index`, else the known attribute its
    name spells ("Eyeglasses.npy" → 7), else None (the pipeline then takes the largest logit change)."""
    info = direction_info_path(path)
    if info.is_file():
        try:
            index = json.loads(info.read_text()).get("class_index")
        except (OSError, ValueError, AttributeError) as error:
            raise DirectionError(f"{info} beside the direction is not readable JSON ({error}); fix or remove it"
                                 ) from None
        if isinstance(index, int):
            return index
    attribute = find_attribute(Path(path).stem)
    return None if attribute is None else attribute.class_index


def load_direction(path: str | Path, n_latent: int = 18, style_dim: int = 512) -> np.ndarray:
    """Read a direction `.npy` and return it normalised: float32 [n_latent, style_dim], ‖n̂‖_F = 1.

    A (18, 512) file also serves a smaller generator (the tiny preset's 14 layers): its first
    `n_latent` rows are the coarse-to-fine layers that generator has.
    """
    path = Path(path)
    if not path.is_file():
        raise DirectionError(f"direction file {path} does not exist")
    try:
        direction = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DirectionError(f"{path} is not a readable .npy array ({error}); save it with np.save") from error
    if direction.ndim == 1 and direction.shape[0] == style_dim:  # a W direction: same for every layer
        direction = np.broadcast_to(direction, (n_latent, style_dim))
    if direction.ndim != 2 or direction.shape[1] != style_dim or direction.shape[0] < n_latent:
        raise DirectionError(
            f"{path} has shape {direction.shape}; expected ({n_latent}, {style_dim}) (W+) or ({style_dim},) (W)"
        )
    return normalize_direction(direction[:n_latent], source=str(path))


def normalize_direction(direction: np.ndarray, source: str = "direction") -> np.ndarray:
    """n / ‖n‖_F over all layers, as float32; a zero or non-finite direction is refused."""
    direction = np.asarray(direction, dtype=np.float64)
    if not np.all(np.isfinite(direction)):
        raise DirectionError(f"{source} contains NaN or Inf")
    norm = np.linalg.norm(direction)
    if norm == 0:
        raise DirectionError(f"{source} is all zeros: it would not edit anything")
    return (direction / norm).astype(np.float32)


def apply_direction(w: np.ndarray, unit_direction: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """w: [B, n_latent, 512] → w + α·n̂ (n̂ already normalised, added to every layer)."""
    if w.shape[1:] != unit_direction.shape:
        raise DirectionError(f"latent shape {w.shape[1:]} and direction shape {unit_direction.shape} differ")
    return (w + np.float32(alpha) * unit_direction[None]).astype(np.float32)
