"""Resume state of a training run: atomic checkpoint writes, the newest one found again, and the
RNG states that make `--resume` continue bit for bit. (Reading the official published weights is
training/checkpoints.py's job; this module writes and reads deghost's own run checkpoints.)

A run checkpoint is a dict of tensors and plain values (loadable with `torch.load(weights_only=True)`):
the state_dicts of the run's parts under their names (`model`, `optimizer`, … for the suppressor;
rosinality's `g`, `d`, `g_ema`, `g_optim`, `d_optim` for StyleGAN2), `step`, `config` and `rng` (one
entry per process: torch, CUDA, numpy and Python generator states, all as tensors, ints and lists),
plus whatever entries a recipe adds for other programs (`extra`).
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from deghost.files import atomic_write

from . import distributed
from .checkpoints import load_file
from .config import config_dict, resume_conflicts

_NAME = re.compile(r"checkpoint-(\d+)\.pt")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"checkpoint-{step:08d}.pt"


def atomic_save(obj: object, path: str | Path) -> Path:
    """torch.save to a temporary name in the same folder, then rename: an interrupted write never
    leaves a truncated file under `path` (which --resume or export would then pick up)."""
    path = Path(path)
    atomic_write(path, lambda file: torch.save(obj, file))
    return path


def save_checkpoint(folder: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write `state` as checkpoint-<step>.pt in `folder` atomically, then delete all but the `keep` newest."""
    path = atomic_save(state, checkpoint_path(folder, step))
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink()
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    """checkpoint-<step>.pt files in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str, folder: str | Path) -> Path:
    """`--resume` value → checkpoint file: 'latest' is the newest in `folder`, anything else a path."""
    if resume != "latest":
        return Path(resume)
    found = list_checkpoints(folder)
    if not found:
        raise FileNotFoundError(
            f"--resume latest: no checkpoint-*.pt in {folder}; pass the checkpoint's path, or drop --resume "
            "to start a new run"
        )
    return found[-1]


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, read with weights_only=True (no pickled code runs)."""
    state = load_file(path)
    missing = {"step", "config", "rng"} - set(state)
    if missing:
        raise ValueError(
            f"{path} is not a deghost training checkpoint (no {sorted(missing)}); to start from weights only, "
            "load them into the model instead of resuming"
        )
    return state


def rng_state() -> dict:
    """This process's generator states as tensors and plain values (safe for weights_only loading)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": keys.tolist(), "pos": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    keys = np.asarray(numpy["keys"], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def checkpoint_state(step: int, parts: dict[str, object], config, context: distributed.Context,
                     extra: dict | None = None) -> dict:
    """Everything --resume needs: state_dicts of `parts` (skipping None), step, config, every process's
    RNG; `extra` entries (plain values and tensors) are stored beside them."""
    state = {name: part.state_dict() for name, part in parts.items() if part is not None}
    rng = distributed.gather_objects(rng_state(), context)
    return {**state, **(extra or {}), "step": step, "config": config_dict(config), "rng": rng}


def write_checkpoint(folder: Path, step: int, parts: dict, config, context: distributed.Context,
                     extra: dict | None = None) -> Path:
    """All processes gather their RNG states; rank 0 writes. Returns the checkpoint's path."""
    state = checkpoint_state(step, parts, config, context, extra)
    if context.is_main:
        save_checkpoint(folder, step, state, config.keep_checkpoints)
    return checkpoint_path(folder, step)


def resume_or_seed(config, parts: dict[str, object], context: distributed.Context) -> tuple[int, Path | None]:
    """Load `config.resume` into `parts` (objects with load_state_dict) and this process's RNG: (its
    step, its path). Without --resume, seed this process's generators (seed + rank: dropout differs
    between processes): (0, None)."""
    if not config.resume:
        seed_everything(config.seed + context.rank)
        return 0, None
    path = resolve_resume(config.resume, Path(config.out) / "checkpoints")
    state = load_checkpoint(path)
    conflicts = resume_conflicts(state["config"], config)
    if conflicts:
        raise ValueError(f"{path} was trained with other settings; resume with the same ones or start a new run "
                         "in another --out:\n  " + "\n  ".join(conflicts))
    for name, part in parts.items():
        if part is not None:
            part.load_state_dict(state[name])
    if len(state["rng"]) == context.world_size:
        set_rng_state(state["rng"][context.rank])
    else:
        warnings.warn(f"{path} was written by {len(state['rng'])} processes, not {context.world_size}: random "
                      "generators are re-seeded, so the run will not repeat the original exactly", stacklevel=2)
        seed_everything(config.seed + context.rank + state["step"])
    return state["step"], path
