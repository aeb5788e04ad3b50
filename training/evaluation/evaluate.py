"""Scoring groups of (output, reference) image pairs with every metric whose weights are at hand.

`load_metric_models` loads LPIPS and the FID Inception from the user's files; a metric whose
files were not given (or do not exist) is skipped, with a note naming the file to supply.
`evaluate_pairs` scores one (attribute, method) group of in-memory pairs and returns a
`GroupResult` for `tables.write_tables`; `pair_folders` + `read_pairs` feed it from two folders
whose files are matched by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deghost.runtime.images import read_image

from . import weights
from .fid import fid_from_features
from .inception import FEATURE_DIM, FIDInceptionV3
from .lpips import LPIPS
from .metrics import SSIM_VARIANTS, SSIMVariant, mae, psnr, ssim, to_unit_float
from .tables import GroupResult

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


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


@torch.inference_mode()
def evaluate_pairs(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    models: MetricModels,
    attribute: str,
    method: str,
    total: int | None = None,
    progress: bool = True,
) -> GroupResult:
    """Score one group: pairs of (name, output RGB uint8 [H,W,3], reference RGB uint8 [H,W,3]), same size.

    PSNR, SSIM and MAE always; LPIPS and FID when their models are loaded. FID compares the
    group's outputs with its references and needs at least 2 pairs.
    """
    per_image: dict[str, list[float]] = {"psnr": [], "ssim": [], "mae": []}
    if models.lpips is not None:
        per_image["lpips"] = []
    names: list[str] = []
    output_features, reference_features = [], []
    for name, output_rgb, reference_rgb in tqdm(
        pairs, total=total, desc=f"{attribute}/{method}", unit="pair", disable=not progress
    ):
        if output_rgb.shape != reference_rgb.shape:
            raise EvaluationError(
                f"{name}: output is {output_rgb.shape[1]}×{output_rgb.shape[0]}, reference "
                f"{reference_rgb.shape[1]}×{reference_rgb.shape[0]}; resize the references to the outputs' size"
            )
        output, reference = to_unit_float(output_rgb), to_unit_float(reference_rgb)
        names.append(name)
        per_image["psnr"].append(psnr(output, reference))
        per_image["ssim"].append(ssim(output, reference, models.ssim_variant))
        per_image["mae"].append(mae(output, reference))
        output_tensor, reference_tensor = _to_tensor(output, models.device), _to_tensor(reference, models.device)
        if models.lpips is not None:
            # LPIPS takes [-1,1] inputs.
            per_image["lpips"].append(float(models.lpips(2 * output_tensor - 1, 2 * reference_tensor - 1)[0]))
        if models.inception is not None:
            features = models.inception(torch.cat([output_tensor, reference_tensor])).double().cpu().numpy()
            output_features.append(features[0])
            reference_features.append(features[1])
    result = GroupResult(attribute, method, names, per_image)
    if models.inception is not None:
        result.fid, note = _group_fid(output_features, reference_features)
        result.notes += [note] if note else []
    return result


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
