"""The metric networks' official weight files: which files, their sha256, and strict loading.

The files are user-supplied (nothing is downloaded). Each is checked against its sha256 before it
is read, then loaded strictly: the file's whole layout (key names and shapes) must be the official
one, including the heads this code does not use (AlexNet's classifier, Inception's 1008-way fc).

How each file is identified:
- `alexnet-owt-7be5be79.pth` (LPIPS backbone): no full digest is published; torch.hub's naming rule
  makes the 8 hex digits in the name the start of the file's sha256, so that prefix is checked.
- `alex.pth` (LPIPS v0.1 linear layers): no digest is published. Its layout is checked, and that
  its weights are ≥ 0 (v0.1 training clamps them); the digest is recorded with the results.
- `pt_inception-2015-12-05-6726825d.pth` (FID): the full digest, as recorded next to pytorch-fid's
  URL in genforce-derived code (e.g. snap-research/discoscene `models/inception_model.py`); it
  starts with the 6726825d of the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from deghost.files import sha256_of

from ..checkpoints import CheckpointError, compare_state_dict, load_file, load_strict
from .alexnet import AlexNetFeatures
from .inception import FIDInceptionV3
from .lpips import LPIPS

_PREFIX_LENGTH = 8
_FULL_LENGTH = 64


@dataclass(frozen=True)
class WeightFile:
    """One official weight file. sha256: the full hex digest, its first 8 digits, or None if unpublished."""

    flag: str  # the `deghost eval` option that passes it
    filename: str
    url: str
    sha256: str | None

    def describe(self) -> str:
        return f"{self.flag} {self.filename} (from {self.url})"


LPIPS_ALEXNET = WeightFile(
    "--lpips-alexnet", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "7be5be79",
)
LPIPS_LINEAR = WeightFile(
    "--lpips-linear", "alex.pth",
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth", None,
)
FID_INCEPTION = WeightFile(
    "--fid-inception", "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)

# The files `deghost eval` uses, looked up when it runs (tests substitute their own files' digests).
WEIGHT_FILES = {"lpips_alexnet": LPIPS_ALEXNET, "lpips_linear": LPIPS_LINEAR, "fid_inception": FID_INCEPTION}

# Heads of the official files that the metrics do not use: {key: shape}.
ALEXNET_CLASSIFIER = {
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}
INCEPTION_FC = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}


def verify_sha256(path: str | Path, spec: WeightFile) -> str:
    """The file's sha256 hex digest, after checking it against `spec` (full digest or 8-digit prefix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass {spec.describe()}")
    digest = sha256_of(path)
    expected = spec.sha256
    if expected is not None and len(expected) not in (_PREFIX_LENGTH, _FULL_LENGTH):
        raise ValueError(f"{spec.filename}: expected sha256 must be 8 or 64 hex digits, got {expected!r}")
    if expected is not None and not digest.startswith(expected):
        raise CheckpointError(
            f"{path} has sha256 {digest}, but {spec.filename} has sha256 "
            f"{expected}{'…' if len(expected) == _PREFIX_LENGTH else ''}: it is another file, or a corrupt or "
            f"re-saved copy. Download it again from {spec.url}"
        )
    return digest


def _split_head(content: Mapping, head: Mapping[str, tuple], path: Path, spec: WeightFile) -> dict:
    """The file's state_dict without its unused head, after checking the head is there with its official shapes."""
    problems = [
        f"{key}: missing" if key not in content else f"{key}: shape {tuple(content[key].shape)}, expected {shape}"
        for key, shape in head.items()
        if key not in content or tuple(content[key].shape) != shape
    ]
    if problems:
        raise CheckpointError(f"{path} is not {spec.filename} ({'; '.join(problems)}); pass {spec.describe()}")
    return {key: value for key, value in content.items() if key not in head}


def _with_batch_counters(model: torch.nn.Module, state: dict) -> dict:
    # Files written by older PyTorch lack BatchNorm's `num_batches_tracked` counters; they only matter
    # for training, and PyTorch fills them with 0 on such files too.
    counters = {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **{k: torch.zeros_like(v) for k, v in counters.items()}}


def load_alexnet_features(path: str | Path, spec: WeightFile = LPIPS_ALEXNET) -> AlexNetFeatures:
    """torchvision `alexnet-owt-7be5be79.pth` → AlexNetFeatures (the classifier is checked, then dropped)."""
    path = Path(path)
    verify_sha256(path, spec)
    features = _split_head(load_file(path), ALEXNET_CLASSIFIER, path, spec)
    return load_strict(AlexNetFeatures(), features, str(path))


def load_lpips(
    alexnet_path: str | Path,
    linear_path: str | Path,
    alexnet_spec: WeightFile = LPIPS_ALEXNET,
    linear_spec: WeightFile = LPIPS_LINEAR,
) -> LPIPS:
    """LPIPS v0.1 (AlexNet) from torchvision's AlexNet file and the v0.1 `alex.pth` linear layers."""
    linear_path = Path(linear_path)
    backbone = load_alexnet_features(alexnet_path, alexnet_spec)
    verify_sha256(linear_path, linear_spec)
    linear = load_file(linear_path)
    model = LPIPS()
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("lin")}
    problems = compare_state_dict(expected, linear)
    if problems:
        raise CheckpointError(
            f"{linear_path} is not the LPIPS v0.1 AlexNet linear layers ({'; '.join(problems[:4])}); "
            f"pass {linear_spec.describe()}"
        )
    # No digest is published for alex.pth; v0.1 training clamps these weights to ≥ 0 after every step.
    if any(bool((weight < 0).any()) for weight in linear.values()):
        raise CheckpointError(
            f"{linear_path} has negative linear weights, which LPIPS v0.1 never has (training clamps them to ≥ 0); "
            f"pass {linear_spec.describe()}"
        )
    state = {**{f"net.{k}": v for k, v in backbone.state_dict().items()}, **linear}
    return load_strict(model, state, f"{alexnet_path} + {linear_path}")


def load_fid_inception(path: str | Path, spec: WeightFile = FID_INCEPTION) -> FIDInceptionV3:
    """pytorch-fid `pt_inception-2015-12-05-6726825d.pth` → FIDInceptionV3 (the 1008-way fc checked, then dropped)."""
    path = Path(path)
    verify_sha256(path, spec)
    model = FIDInceptionV3()
    backbone = _with_batch_counters(model, _split_head(load_file(path), INCEPTION_FC, path, spec))
    return load_strict(model, backbone, str(path))
