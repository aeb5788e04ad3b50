"""The whole job of `deghost train direction`: samples → boundary (conditional with --keep) → `<name>.npy` in the
official files' form + `<name>.json` (what it is, how it was made, how well it separates, how entangled it is)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deghost import __version__
from deghost.attributes import class_names
from deghost.files import atomic_write_bytes, npy_bytes
from deghost.manifest import utc_now
from deghost.runtime.directions import DEFAULT_ALPHA, direction_info_path

from . import entanglement
from .boundary import RATIO, SPLIT, Boundary, project_out, train_boundary
from .samples import LatentSampler, SampleStore, collect

DIRECTION_SHAPE = (18, 512)  # the official files' form: W+ of the 1024 generator, smaller ones read the first rows


@dataclass(frozen=True)
class Target:
    label: str  # the attribute's name, or "class N"
    class_index: int


@dataclass(frozen=True)
class DirectionJob:
    target: Target
    keep: tuple[Target, ...] = ()
    samples: int = 10_000
    ratio: float = RATIO
    split: float = SPLIT
    alpha: float = DEFAULT_ALPHA  # of the entanglement measurement
    entanglement_samples: int = 16
    batch_size: int = 4


@dataclass(frozen=True)
class LearnedDirection:
    path: Path  # <name>.npy
    info: dict  # what <name>.json holds
    normal: np.ndarray  # the direction in the sampled space, unit norm (after projection)
    kept_normals: dict[str, np.ndarray]  # label → the normal projected out
    table: str  # the entanglement table, markdown


def direction_array(normal: np.ndarray, n_latent: int) -> np.ndarray:
    """A W normal [512] on every layer, or a W+ normal [n_latent·512], as (18, 512) float64 with ‖·‖_F = 1 (rows a
    smaller generator lacks stay zero)."""
    array = np.zeros(DIRECTION_SHAPE)
    rows = np.asarray(normal, np.float64).reshape(-1, DIRECTION_SHAPE[1])
    array[:n_latent] = rows if len(rows) == n_latent else np.repeat(rows, n_latent, 0)
    return array / np.linalg.norm(array)


def learn_direction(job: DirectionJob, sampler: LatentSampler, scorer, store: SampleStore, out: Path, name: str,
                    untrained: bool, overwrite: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print) -> LearnedDirection:
    out = Path(out)
    path = out / f"{name}.npy"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; give another --name or --out, or --overwrite to replace it")
    latents, scores = collect(store, sampler, scorer, job.samples, job.batch_size, progress)
    settings = store.settings

    def boundary(target: Target) -> Boundary:
        return train_boundary(latents, scores[:, target.class_index], job.ratio, job.split, settings.seed)

    primal = boundary(job.target)
    kept = {t.label: boundary(t) for t in job.keep}
    normal = project_out(primal.normal, [b.normal for b in kept.values()])
    direction = direction_array(normal, sampler.n_latent)
    log(f"{job.target.label}: held-out accuracy {primal.accuracy:.3f} ({primal.held_out_count} per side)"
        + "".join(f"; {label} projected out (its accuracy {b.accuracy:.3f})" for label, b in kept.items()))

    shown = min(job.entanglement_samples, len(latents))
    columns = {f"{job.target.label} (all)": direction_array(primal.normal, sampler.n_latent)}
    if kept:
        columns[f"{job.target.label} keeping {', '.join(kept)}"] = direction
    changes = entanglement.measure(scorer, sampler.wplus(latents[:shown]), scores[:shown], columns, job.alpha,
                                   job.batch_size)
    names = class_names(scorer.n_classes)
    table = entanglement.table(changes, names, job.target.class_index, job.alpha, shown, untrained)

    info = {
        "attribute": job.target.label, "class_index": job.target.class_index, "file": path.name,
        "samples": job.samples, "ratio": job.ratio, "per_side": {"train": primal.train_count,
                                                                 "held_out": primal.held_out_count},
        "held_out_accuracy": primal.accuracy,
        "kept": [{"attribute": t.label, "class_index": t.class_index, "held_out_accuracy": kept[t.label].accuracy}
                 for t in job.keep],
        **asdict(settings), "untrained": untrained, "scorer": scorer.kind,
        "entanglement": {"alpha": job.alpha, "samples": shown, "classes": names,
                         "directions": {label: c.as_dict() for label, c in changes.items()}},
        "deghost_version": __version__, "written": utc_now(),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, npy_bytes(direction))
    atomic_write_bytes(direction_info_path(path), (json.dumps(info, indent=2) + "\n").encode())
    return LearnedDirection(path, info, normal, {label: b.normal for label, b in kept.items()}, table)
