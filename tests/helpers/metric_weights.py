"""Stand-ins for the official LPIPS / FID weight files, saved in the official layouts.

The real files cannot be downloaded here, so tests write files with random weights under the
official key names and shapes, and substitute the stand-ins' sha256 where a check expects one.
The unused heads (AlexNet's classifier, Inception's fc) are saved as zero-stride views of one
element: torch.save keeps the view, so the files stay small while the shapes are the official ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from deghost.files import sha256_of
from deghost.training.evaluation import weights
from deghost.training.evaluation.alexnet import AlexNetFeatures
from deghost.training.evaluation.inception import FIDInceptionV3
from deghost.training.evaluation.lpips import LPIPS


def _small_head(layout: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {key: torch.zeros(1).expand(shape) for key, shape in layout.items()}


def write_alexnet_file(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save({**AlexNetFeatures().state_dict(), **_small_head(weights.ALEXNET_CLASSIFIER)}, path)
    return path


def write_lpips_linear_file(path: Path, seed: int = 1) -> Path:
    generator = torch.Generator().manual_seed(seed)
    heads = {key: value for key, value in LPIPS().state_dict().items() if key.startswith("lin")}
    linear = {key: torch.rand(value.shape, generator=generator) for key, value in heads.items()}
    torch.save(linear, path)
    return path


def write_inception_file(path: Path, seed: int = 2, batch_counters: bool = True) -> Path:
    torch.manual_seed(seed)
    model = FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            # He init keeps activations O(1) through the 94 convs; PyTorch's default shrinks them into
            # denormal floats, which make a CPU forward pass 10-20× slower.
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    state = model.state_dict()
    if not batch_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save({**state, **_small_head(weights.INCEPTION_FC)}, path)
    return path


def accepting(spec: weights.WeightFile, path: Path) -> weights.WeightFile:
    """`spec` with the sha256 of the stand-in at `path`, so the stand-in passes the check."""
    return dataclasses.replace(spec, sha256=sha256_of(path))


def write_all(folder: Path) -> dict[str, Path]:
    """The three stand-ins in `folder`, named like the official files, by WEIGHT_FILES key."""
    return {
        "lpips_alexnet": write_alexnet_file(folder / weights.LPIPS_ALEXNET.filename),
        "lpips_linear": write_lpips_linear_file(folder / weights.LPIPS_LINEAR.filename),
        "fid_inception": write_inception_file(folder / weights.FID_INCEPTION.filename),
    }
