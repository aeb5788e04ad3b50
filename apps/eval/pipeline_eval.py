"""The paper's evaluation run: the first N faces of a folder through the pipeline, every method scored.

For each image and attribute the pipeline renders the edit once and suppresses its ghosting with
every method asked for; each (attribute, method) group is scored image by image against a
reference and, for FID, against the original faces:

    reference "poisson"  (default) F_train = seamlessClone(F_fused → I, M_face), the target the
                         suppressor is trained to reproduce (docs/design.md §1)
    reference "original" the input face I as the models saw it
    FID                  outputs of the group vs the original faces (the real-face distribution)

Methods are the runtime's suppress modes under their table names: network (ours, MAResU-Net),
eogi (the baseline), poisson (seamlessClone itself) and fused (F_fused, nothing suppressed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deghost.runtime.directions import DEFAULT_ALPHA
from deghost.runtime.images import IMAGE_SUFFIXES, ImageError, from_model_output, image_files, read_image, write_image
from deghost.runtime.pipeline import FaceOptions, Pipeline
from deghost.training.evaluation.evaluate import EvaluationError, GroupScorer, MetricModels, inception_features
from deghost.training.evaluation.tables import GroupResult

from .methods import METHOD_MODES, REFERENCES

REFERENCE_FOLDER = "reference"  # saved images: <save>/<attribute>/<method or reference>/<name>.png
ALIGNED = FaceOptions(aligned=True)  # CelebA-HQ's faces are aligned crops, evaluated as they are


def natural_key(path: Path) -> list:
    """Sort key that puts 2.jpg before 10.jpg (CelebA-HQ names its files 0.jpg … 29999.jpg)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def first_images(folder: str | Path, count: int) -> list[Path]:
    """The first `count` image files of `folder` in natural name order (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"image folder {folder} does not exist or is not a folder; check the path")
    if count < 1:
        raise EvaluationError(f"--first must be at least 1, got {count}")
    images = sorted(image_files(folder), key=natural_key)
    if not images:
        raise EvaluationError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return images[:count]


def check_methods(methods: Sequence[str], reference: str) -> None:
    """Refuse unknown methods and references, and the method that would be scored against itself."""
    unknown = [method for method in methods if method not in METHOD_MODES]
    if unknown or not methods:
        raise EvaluationError(f"unknown method(s) {unknown or '(none given)'}; choose from {', '.join(METHOD_MODES)}")
    if reference not in REFERENCES:
        raise EvaluationError(f"unknown reference {reference!r}; choose from {', '.join(REFERENCES)}")
    if reference == "poisson" and "poisson" in methods:
        raise EvaluationError("method poisson against the poisson reference compares the target with itself; "
                              "use --reference original to score seamlessClone")


@dataclass
class PipelineEvaluation:
    """The groups in (attribute, method) order, notes for the tables, and the images left out."""

    groups: list[GroupResult]
    notes: list[str]
    evaluated: int
    failed: list[tuple[Path, str]] = field(default_factory=list)


def evaluate_pipeline(
    pipeline: Pipeline,
    paths: Sequence[Path],
    attributes: Sequence[str],
    methods: Sequence[str],
    models: MetricModels,
    reference: str = "poisson",
    alpha: float = DEFAULT_ALPHA,
    batch: int = 1,
    save_dir: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PipelineEvaluation:
    """Edit `paths` with every attribute, suppress with every method, score every (attribute, method) group.

    An image that cannot be read is left out of every group and listed in `failed`. With `save_dir`,
    the outputs and references are written as <save_dir>/<attribute>/<method|reference>/<name>.png so
    `deghost eval --outputs … --references …` can rescore them (an existing file is an error unless `overwrite`).
    """
    check_methods(methods, reference)
    modes = list(dict.fromkeys([METHOD_MODES[m] for m in methods] + (["poisson"] if reference == "poisson" else [])))
    try:
        edits = pipeline.edits(list(attributes), alpha)  # before any work: unknown attributes, bad direction files
    except ValueError as error:
        raise EvaluationError(str(error)) from error
    pipeline.prepare(modes)
    scorers = {(a, m): GroupScorer(models, a, m) for a in attributes for m in methods}
    original_features: list[np.ndarray] = []
    failed: list[tuple[Path, str]] = []
    resized: list[str] = []
    bar = tqdm(total=len(paths), desc="evaluating", unit="image", disable=not progress)
    for start in range(0, len(paths), batch):
        names, faces = [], []
        for path in paths[start : start + batch]:
            try:
                faces.append(pipeline.crops(read_image(path).rgb, ALIGNED))
                names.append(path.stem)
            except ImageError as error:
                failed.append((path, str(error)))
        if faces:
            result = pipeline.run(np.concatenate([face.tensor for face in faces]), edits, suppress=modes)
            resized += [warning for face in faces for warning in face.warnings]
            originals = from_model_output(result.images)
            outputs = {method: result.rgb(METHOD_MODES[method]) for method in methods}
            references = result.rgb("poisson") if reference == "poisson" else None
            for i, name in enumerate(names):
                if models.inception is not None:
                    original_features.append(inception_features(models, originals[i]))
                for k, attribute in enumerate(attributes):
                    row = result.row(i, k)
                    reference_rgb = originals[i] if references is None else references[row]
                    for method in methods:
                        scorers[attribute, method].add(name, outputs[method][row], reference_rgb)
                    if save_dir is not None:
                        saved = {**{m: outputs[m][row] for m in methods}, REFERENCE_FOLDER: reference_rgb}
                        for folder, rgb in saved.items():
                            write_image(save_dir / attribute / folder / f"{name}.png", rgb, overwrite=overwrite)
        bar.update(len(paths[start : start + batch]))
    bar.close()
    evaluated = len(paths) - len(failed)
    if not evaluated:
        raise EvaluationError(f"none of the {len(paths)} images could be read: {failed[0][1]}")
    notes = _notes(pipeline, reference, alpha, evaluated, failed, resized)
    return PipelineEvaluation([scorer.finish(original_features) for scorer in scorers.values()], notes, evaluated,
                              failed)


def _notes(pipeline: Pipeline, reference: str, alpha: float, evaluated: int, failed: list, resized: list) -> list:
    side = pipeline.preset.image_size
    notes = [
        f"{evaluated} images edited at {side}² with alpha {alpha:g} (engines: {pipeline.manifest.folder}, backends "
        f"{', '.join(sorted(set(pipeline.describe().values())))})",
        "reference: " + ("the Poisson target seamlessClone(F_fused → I, M_face), the suppressor's training target"
                         if reference == "poisson" else "the original face I") + "; FID against the original faces",
    ]
    if pipeline.untrained:
        notes.insert(0, "UNTRAINED (random, seeded) weights: these numbers test the plumbing, not the method")
    if resized:
        notes.append(f"{len(resized)} input(s) were cropped or resized to {side}², e.g. {resized[0]}")
    notes += [f"left out, unreadable: {path.name}: {message}" for path, message in failed]
    return notes
