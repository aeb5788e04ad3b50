"""Scoring groups of (output, reference) image pairs with every metric whose weights are at hand.

`load_metric_models` loads LPIPS and the FID Inception from the user's files; a metric whose
files were not given (or do not exist) is skipped, with a note naming the file to supply.
`GroupScorer` scores one (attribute, method) group a pair at a time and gives a `GroupResult` for
`tables.write_tables`; `evaluate_pairs` runs it over an iterable of pairs, which `pair_folders` +
`read_pairs` make from two folders whose files are matched by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deghost.runtime.images import IMAGE_SUFFIXES, read_image

from . import weights
from .fid import fid_from_features
from .inception import FEATURE_DIM, FIDInceptionV3
from .lpips import LPIPS
from .metrics import SSIM_VARIANTS, SSIMVariant, mae, psnr, ssim, to_unit_float
from .tables import GroupResult


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated: missing folders, no pairs, ambiguous names."""


@dataclass
class MetricModels:
    """The loaded metric networks (None = metric skipped) and notes for the tables."""

    lpips: LPIPS | None
    inception: FIDInceptionV3 | None
    ssim_variant: SSIMVariant
    device: torch.device
    notes: list[str] = field(default_factory=list)


def _given(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_file()


def _skip_note(metric: str, specs: list[weights.WeightFile], paths: list[str | Path | None]) -> str:
    wanted = "; ".join(
        spec.describe() + ("" if path is None else f" — {path} is not a file")
        for spec, path in zip(specs, paths, strict=True)
        if not _given(path)
    )
    return f"{metric} skipped: supply {wanted}"


def load_metric_models(
    lpips_alexnet: str | Path | None,
    lpips_linear: str | Path | None,
    fid_inception: str | Path | None,
    ssim_variant: SSIMVariant = "skimage",
    device: str | torch.device = "cpu",
) -> MetricModels:
    """Load the networks whose files exist; record a note for each metric skipped or loaded.

    A file that exists but fails its sha256 or layout check raises CheckpointError: a wrong file is
    a mistake to fix, not a metric to skip.
    """
    if ssim_variant not in SSIM_VARIANTS:
        raise ValueError(f"unknown SSIM variant {ssim_variant!r}; choose one of {sorted(SSIM_VARIANTS)}")
    device = torch.device(device)
    files = weights.WEIGHT_FILES
    notes = [f"SSIM variant {ssim_variant}: {SSIM_VARIANTS[ssim_variant]}"]
    lpips_model = inception = None
    if _given(lpips_alexnet) and _given(lpips_linear):
        lpips_model = weights.load_lpips(lpips_alexnet, lpips_linear, files["lpips_alexnet"], files["lpips_linear"])
        lpips_model = lpips_model.to(device)
        digest = weights.verify_sha256(lpips_linear, files["lpips_linear"])
        notes.append(f"LPIPS: AlexNet v0.1; {Path(lpips_linear).name} sha256 {digest}")
    else:
        lpips_specs = [files["lpips_alexnet"], files["lpips_linear"]]
        notes.append(_skip_note("LPIPS", lpips_specs, [lpips_alexnet, lpips_linear]))
    if _given(fid_inception):
        inception = weights.load_fid_inception(fid_inception, files["fid_inception"]).to(device)
        notes.append("FID: pytorch-fid InceptionV3 pool3 (2048-d), bilinear resize to 299×299")
    else:
        notes.append(_skip_note("FID", [files["fid_inception"]], [fid_inception]))
    return MetricModels(lpips_model, inception, ssim_variant, device, notes)


@dataclass
class Pairing:
    """Files matched by name (suffix ignored): pairs as (name, output, reference), and the leftovers."""

    pairs: list[tuple[str, Path, Path]]
    only_outputs: list[Path]
    only_references: list[Path]


def _images_by_stem(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvaluationError(f"{role} folder {folder} does not exist or is not a folder; check the path")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in by_stem:
            raise EvaluationError(
                f"{role} folder holds two images named {path.stem!r} ({by_stem[path.stem].name}, {path.name}); "
                "files are paired by name without suffix, so keep one of them"
            )
        by_stem[path.stem] = path
    return by_stem


def pair_folders(outputs: str | Path, references: str | Path) -> Pairing:
    """Match the images of two folders by file name without suffix (`003.png` ↔ `003.jpg`)."""
    output_files = _images_by_stem(Path(outputs), "outputs")
    reference_files = _images_by_stem(Path(references), "references")
    names = sorted(output_files.keys() & reference_files.keys())
    if not names:
        raise EvaluationError(
            f"no image in {outputs} has a namesake in {references} ({len(output_files)} and {len(reference_files)} "
            "images); files are paired by name without suffix"
        )
    return Pairing(
        pairs=[(name, output_files[name], reference_files[name]) for name in names],
        only_outputs=[path for stem, path in output_files.items() if stem not in reference_files],
        only_references=[path for stem, path in reference_files.items() if stem not in output_files],
    )


def read_pairs(pairs: Iterable[tuple[str, Path, Path]]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, output path, reference path) → (name, output RGB uint8 [H,W,3], reference RGB uint8 [H,W,3])."""
    for name, output_path, reference_path in pairs:
        yield name, read_image(output_path).rgb, read_image(reference_path).rgb


def _to_tensor(unit: np.ndarray, device: torch.device) -> torch.Tensor:
    """float [H,W,3] in [0,1] → float32 [1,3,H,W] in [0,1]."""
    return torch.from_numpy(unit).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)


def inception_features(models: MetricModels, rgb: np.ndarray) -> np.ndarray | None:
    """RGB uint8 [H,W,3] → FID pool3 features float64 [2048], or None when FID is skipped."""
    return None if models.inception is None else _unit_features(models, to_unit_float(rgb))


@torch.inference_mode()
def _unit_features(models: MetricModels, unit: np.ndarray) -> np.ndarray:
    """float [H,W,3] in [0,1] → pool3 features float64 [2048]."""
    return models.inception(_to_tensor(unit, models.device)).double().cpu().numpy()[0]


class GroupScorer:
    """Scores one (attribute, method) group, fed one pair at a time; `finish` gives its GroupResult.

    PSNR, SSIM and MAE always; LPIPS and the outputs' FID features when those models are loaded.
    """

    def __init__(self, models: MetricModels, attribute: str, method: str):
        self.models = models
        self.result = GroupResult(attribute, method, per_image={"psnr": [], "ssim": [], "mae": []})
        if models.lpips is not None:
            self.result.per_image["lpips"] = []
        self.output_features: list[np.ndarray] = []

    @torch.inference_mode()
    def add(self, name: str, output_rgb: np.ndarray, reference_rgb: np.ndarray) -> None:
        """Score one pair: output and reference RGB uint8 [H,W,3] of the same size."""
        if output_rgb.shape != reference_rgb.shape:
            raise EvaluationError(
                f"{name}: output is {output_rgb.shape[1]}×{output_rgb.shape[0]}, reference "
                f"{reference_rgb.shape[1]}×{reference_rgb.shape[0]}; resize the references to the outputs' size"
            )
        output, reference = to_unit_float(output_rgb), to_unit_float(reference_rgb)
        scores = self.result.per_image
        self.result.names.append(name)
        scores["psnr"].append(psnr(output, reference))
        scores["ssim"].append(ssim(output, reference, self.models.ssim_variant))
        scores["mae"].append(mae(output, reference))
        if self.models.lpips is not None:
            device = self.models.device
            # LPIPS takes [-1,1] inputs.
            lpips = self.models.lpips(2 * _to_tensor(output, device) - 1, 2 * _to_tensor(reference, device) - 1)
            scores["lpips"].append(float(lpips[0]))
        if self.models.inception is not None:
            self.output_features.append(_unit_features(self.models, output))

    def finish(self, fid_reference_features: Sequence[np.ndarray] = ()) -> GroupResult:
        """The group's result; FID of its outputs against `fid_reference_features` when FID is loaded."""
        if self.models.inception is not None:
            self.result.fid, note = _group_fid(self.output_features, list(fid_reference_features))
            self.result.notes += [note] if note else []
        return self.result


def evaluate_pairs(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    models: MetricModels,
    attribute: str,
    method: str,
    total: int | None = None,
    progress: bool = True,
) -> GroupResult:
    """Score one group: pairs of (name, output RGB uint8 [H,W,3], reference RGB uint8 [H,W,3]), same size.

    FID compares the group's outputs with its references and needs at least 2 pairs.
    """
    scorer, reference_features = GroupScorer(models, attribute, method), []
    for name, output_rgb, reference_rgb in tqdm(
        pairs, total=total, desc=f"{attribute}/{method}", unit="pair", disable=not progress
    ):
        scorer.add(name, output_rgb, reference_rgb)
        if models.inception is not None:
            reference_features.append(inception_features(models, reference_rgb))
    return scorer.finish(reference_features)


def _group_fid(output_features: list[np.ndarray], reference_features: list[np.ndarray]) -> tuple[float | None, str]:
    """(FID or None, a note on its reliability or absence) from per-image pool3 features [2048] each."""
    count = len(output_features)
    if count < 2:
        return None, f"FID not computed: it needs at least 2 pairs, got {count}"
    note = ""
    if count <= FEATURE_DIM:
        note = (f"FID from {count} pairs (≤ {FEATURE_DIM} feature dimensions: rank-deficient covariances, biased "
                "upwards); compare it only with FIDs from the same number of images")
    return fid_from_features(np.stack(output_features), np.stack(reference_features)), note
