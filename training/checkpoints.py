"""Loading the official public checkpoints safely and strictly.

Every file goes through `torch.load(weights_only=True)`: no pickled code from a user's file is ever
executed. The only non-tensor types allowed are the plain ones the official files hold
(`argparse.Namespace` in rosinality training checkpoints). Each loader checks the state_dict against
the model it fills and refuses a mismatch with the first differences listed.

| file                       | loader              | content                                                  |
|----------------------------|---------------------|----------------------------------------------------------|
| stylegan2-ffhq-config-f.pt | load_stylegan2      | `g_ema` (+ optional `g`, `d`, `latent_avg`)              |
| psp_ffhq_encode.pt         | load_psp            | `state_dict` (`encoder.*`, `decoder.*`), `latent_avg`    |
| 79999_iter.pth             | load_bisenet        | BiSeNet state_dict                                       |
| diff_cam_weight.pt         | load_diffcam        | `shared.*`, `classifier.*`, `fc.*`                       |
| deghosting.pt              | load_deghosting     | EOGI Deghosting, mmgen generator names                   |
| vgg16-397923af.pth         | load_vgg16_features | torchvision VGG-16 (`features.*` used)                   |
| model_ir_se50.pth          | load_arcface        | pSp's ArcFace IR-SE-50 (identity loss, encoder init)     |
| resnet34-b627a593.pth      | load_resnet34_stem_encoder | torchvision ResNet-34 → MAResU-Net's encoder      |
| stylegan2-ffhq-config-f.pt | load_stylegan2_discriminator | its `d` alone (suppressor's discriminator init) |
| suppressor checkpoints     | load_maresunet      | deghost's MAResU-Net: a state_dict or a `model` entry    |
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deghost.presets import get_preset

from .models.arcface import ArcFace
from .models.bisenet import BiSeNet
from .models.diffcam import DiffCam
from .models.eogi_deghosting import Deghosting, deghosting_from_official
from .models.maresunet import MAResUNet
from .models.psp import PSPEncoder, psp_encoder
from .models.stylegan2 import Discriminator, Generator
from .models.vgg import VGG16Features
from .psp_config import ARCFACE_FILE, ARCFACE_URL

# Where each pretrained file comes from: one source for the "missing file" messages.
PRETRAINED_SOURCES = {
    "vgg16": "torchvision's ImageNet VGG-16, vgg16-397923af.pth "
             "(https://download.pytorch.org/models/vgg16-397923af.pth)",
    "resnet34": "torchvision's ImageNet ResNet-34, resnet34-b627a593.pth "
                "(https://download.pytorch.org/models/resnet34-b627a593.pth; the older resnet34-333f7ec4.pth "
                "works too)",
    "stylegan2": "rosinality/stylegan2-pytorch's stylegan2-ffhq-config-f.pt (linked from that repository's README, "
                 "or converted from NVIDIA's stylegan2-ffhq-config-f.pkl with its convert_weight.py), or a "
                 "`deghost train stylegan2` checkpoint",
}

# Plain types that official files pickle besides tensors; nothing that carries code.
SAFE_GLOBALS = [argparse.Namespace]
_MAX_LISTED = 8


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, unsafe, or not the layout the model expects."""


def load_file(path: str | Path) -> dict:
    """Read a checkpoint on the CPU (files saved from CUDA included) without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of the downloaded file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or EOFError by case
        raise CheckpointError(unsafe_checkpoint_message(path, error)) from error
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, expected a dict of tensors")
    return dict(content)


def unsafe_checkpoint_message(path: Path, error: BaseException) -> str:
    """What was found in a file `torch.load(weights_only=True)` refused, and what to do with it.

    PyTorch's own message advises loading with weights_only=False, which would run the file's
    pickled code inside deghost: we name what was found and how to turn a trusted file into tensors.
    """
    text = str(error)
    globals_found = sorted(set(re.findall(r"Unsupported global: GLOBAL ([\w.]+)", text)))
    if globals_found:
        found = f"it pickles Python objects besides tensors ({', '.join(globals_found)})"
    elif "WeightsUnpickler error" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n", 1)[0].strip()
        found = f"it holds pickled data deghost does not read ({detail or type(error).__name__})"
    else:
        first = next((line for line in text.strip().splitlines() if "weights_only" not in line), "no detail")
        found = f"it is not a readable PyTorch file ({type(error).__name__}: {first})"
    return (
        f"cannot load {path}: {found}. deghost reads only tensors and plain values, so no code in a checkpoint "
        "ever runs. If the file comes from a source you trust, open it once with the code that wrote it and "
        "save only the weights, torch.save(model.state_dict(), 'weights.pt'), then pass weights.pt; "
        "otherwise download the file again."
    )


def compare_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences (missing, unexpected, wrong shape) between two state_dicts."""
    problems = [f"missing key {k}" for k in expected if k not in got]
    problems += [f"unexpected key {k}" for k in got if k not in expected]
    problems += [
        f"{k}: shape {tuple(got[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    return problems


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Fill `model` from `state_dict`, refusing any key or shape difference with the first few listed."""
    problems = compare_state_dict(model.state_dict(), state_dict)
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CheckpointError(
            f"{source} does not match {type(model).__name__} ({len(problems)} differences):\n  {listed}{more}\n"
            "Check that the file is the one named for this network and that the preset matches its resolution."
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _fill_missing_buffers(model: nn.Module, state_dict: dict, source: str) -> dict:
    """Older StyleGAN2 converters omit the fixed noise and FIR kernel buffers: regenerate them."""
    reference = model.state_dict()
    restorable = [k for k in reference if k not in state_dict and (k.startswith("noises.") or k.endswith("kernel"))]
    if restorable:
        warnings.warn(
            f"{source} has no {len(restorable)} fixed buffers (noises.*, FIR kernels), as older converters "
            "write them; FIR kernels are regenerated exactly, noise buffers are drawn anew from the model's seed.",
            stacklevel=3,
        )
        state_dict = {**state_dict, **{k: reference[k] for k in restorable}}
    return state_dict


def _prefixed(state_dict: Mapping, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _require(content: Mapping, key: str, path: Path, hint: str) -> object:
    if key not in content:
        raise CheckpointError(f"{path} has no {key!r} entry (found {sorted(content)[:6]}); {hint}")
    return content[key]


@dataclass
class StyleGAN2Checkpoint:
    generator: Generator
    discriminator: Discriminator | None
    latent_avg: torch.Tensor | None  # [512] mean of the mapping network's output, if stored


def load_stylegan2(path: str | Path, size: int = 1024) -> StyleGAN2Checkpoint:
    """rosinality `stylegan2-ffhq-config-f.pt`: the EMA generator, optional discriminator and latent_avg."""
    path = Path(path)
    content = load_file(path)
    g_ema = _require(content, "g_ema", path, "is this a rosinality StyleGAN2 checkpoint?")
    found = stylegan2_size(g_ema)
    if found != size:
        raise CheckpointError(
            f"{path} holds a {found}x{found} StyleGAN2 generator, but {size}x{size} is needed here; pass a "
            f"{size}² checkpoint or the preset whose image size is {found}"
        )
    generator = Generator(size)
    load_strict(generator, _fill_missing_buffers(generator, dict(g_ema), f"{path}['g_ema']"), f"{path}['g_ema']")
    discriminator = None
    if "d" in content:
        discriminator = load_strict(Discriminator(size), content["d"], f"{path}['d']")
    return StyleGAN2Checkpoint(generator, discriminator, content.get("latent_avg"))


@dataclass
class PSPCheckpoint:
    encoder: PSPEncoder
    generator: Generator
    latent_avg: torch.Tensor  # [n_latent, 512], added to the encoder's codes


def load_psp(path: str | Path, preset: str = "ffhq1024") -> PSPCheckpoint:
    """pSp `psp_ffhq_encode.pt`: encoder, its StyleGAN2 decoder and the W+ latent_avg."""
    path = Path(path)
    spec = get_preset(preset)
    content = load_file(path)
    state = _require(content, "state_dict", path, "is this a pSp checkpoint (psp_ffhq_encode.pt)?")
    latent_avg = _require(content, "latent_avg", path, "pSp checkpoints store latent_avg [18,512]")
    if tuple(latent_avg.shape) != (spec.n_latent, spec.style_dim):
        raise CheckpointError(
            f"{path}: latent_avg has shape {tuple(latent_avg.shape)}, preset {preset} expects "
            f"({spec.n_latent}, {spec.style_dim})"
        )
    encoder = load_strict(psp_encoder(spec), _prefixed(state, "encoder."), f"{path} encoder.*")
    generator = Generator(spec.image_size)
    decoder_state = _fill_missing_buffers(generator, _prefixed(state, "decoder."), f"{path} decoder.*")
    load_strict(generator, decoder_state, f"{path} decoder.*")
    return PSPCheckpoint(encoder, generator, latent_avg.float())


def load_bisenet(path: str | Path) -> BiSeNet:
    """face-parsing.PyTorch `79999_iter.pth` (19 classes)."""
    return load_strict(BiSeNet(n_classes=19), load_file(path), str(path))


def load_diffcam(path: str | Path, n_classes: int = 17) -> DiffCam:
    """EOGI `diff_cam_weight.pt`: Diff-CAM encoder + attribute classifier."""
    content = load_file(path)
    state = content.get("state_dict", content)
    return load_strict(DiffCam(n_classes=n_classes), state, str(path))


def load_deghosting(path: str | Path, preset: str = "ffhq1024") -> Deghosting:
    """EOGI `deghosting.pt` (mmgen generator key names, remapped to rosinality ones)."""
    spec = get_preset(preset)
    content = load_file(path)
    state = content.get("state_dict", content)
    model = Deghosting(in_size=spec.deghosting_size, out_size=spec.image_size)
    return load_strict(model, deghosting_from_official(state), str(path))


def require_pretrained(path: str | Path, kind: str) -> Path:
    """`path` of a pretrained file of `kind` (a PRETRAINED_SOURCES key), or a CheckpointError that
    names the file and where it comes from."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: expected {PRETRAINED_SOURCES[kind]}; download it and pass "
                              "its path")
    return path


def load_vgg16_features(path: str | Path) -> VGG16Features:
    """torchvision `vgg16-397923af.pth`: only `features.*` is used (the classifier is ignored)."""
    content = load_file(require_pretrained(path, "vgg16"))
    model = VGG16Features()
    features = {k: v for k, v in content.items() if k in model.state_dict()}
    if not any(k.startswith("features.") for k in content):
        raise CheckpointError(f"{path} has no features.* keys; expected torchvision's vgg16-397923af.pth")
    return load_strict(model, features, str(path))


def load_arcface(path: str | Path) -> ArcFace:
    """pSp's `model_ir_se50.pth` (TreB1eN's ArcFace IR-SE-50 at 112²), strictly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; download pSp's {ARCFACE_FILE} from {ARCFACE_URL}")
    return load_strict(ArcFace(), load_file(path), str(path))


def stylegan2_size(generator_state: Mapping[str, torch.Tensor]) -> int:
    """Output side of a rosinality generator state_dict: one `to_rgbs.<i>` per resolution 8 … size."""
    indices = {int(key.split(".")[1]) for key in generator_state if key.startswith("to_rgbs.")}
    return 2 ** (len(indices) + 2)


def load_maresunet(path: str | Path) -> MAResUNet:
    """A deghost suppressor checkpoint: a bare state_dict, or a training checkpoint's `model` entry."""
    content = load_file(path)
    state = content.get("model", content.get("state_dict", content))
    return load_strict(MAResUNet(in_channels=6, out_channels=3), state, str(path))


def load_stylegan2_discriminator(path: str | Path, size: int) -> Discriminator:
    """The discriminator `d` of a rosinality StyleGAN2 checkpoint (`stylegan2-ffhq-config-f.pt` or a
    `deghost train stylegan2` one), strictly, at input side `size`."""
    path = require_pretrained(path, "stylegan2")
    content = load_file(path)
    state = _require(content, "d", path, f"the discriminator init needs {PRETRAINED_SOURCES['stylegan2']}")
    return load_strict(Discriminator(size), state, f"{path}['d'] (a {size}² discriminator expected)")


# torchvision ResNet-34 names → MAResU-Net's (the official model wraps the same trunk).
_RESNET_TO_MARESUNET = {"conv1.": "firstconv.", "bn1.": "firstbn.", "layer1.": "encoder1.", "layer2.": "encoder2.",
                        "layer3.": "encoder3.", "layer4.": "encoder4."}


def load_resnet34_stem_encoder(path: str | Path, in_channels: int = 6) -> dict[str, torch.Tensor]:
    """torchvision `resnet34-*.pth` (ImageNet) → a partial MAResU-Net state_dict: firstconv, firstbn,
    encoder1..4 (the fully connected layer is dropped).

    The 6-channel stem sees cat(I, F_fused): each RGB filter is copied for both images and scaled by
    3 / in_channels (×0.5), so two identical images give the ImageNet stem's response.
    Load with `model.load_state_dict(state, strict=False)`; the rest keeps its initialisation.
    """
    path = require_pretrained(path, "resnet34")
    content = load_file(path)
    if "conv1.weight" not in content or "layer4.2.bn2.weight" not in content:
        raise CheckpointError(f"{path} has no conv1/layer4 keys of a ResNet-34; expected "
                              f"{PRETRAINED_SOURCES['resnet34']}")
    state = {}
    for key, value in content.items():
        prefix = next((p for p in _RESNET_TO_MARESUNET if key.startswith(p)), None)
        if prefix is not None:
            state[_RESNET_TO_MARESUNET[prefix] + key[len(prefix):]] = value
    stem = state["firstconv.weight"]
    if in_channels % stem.shape[1]:
        raise CheckpointError(f"a {stem.shape[1]}-channel stem cannot be tiled to {in_channels} input channels")
    copies = in_channels // stem.shape[1]
    state["firstconv.weight"] = stem.repeat(1, copies, 1, 1) / copies
    expected = {k: v for k, v in MAResUNet(in_channels, 3).state_dict().items() if k in state}
    problems = compare_state_dict(expected, state)
    if problems:
        raise CheckpointError(f"{path} does not fit MAResU-Net's encoder: " + "; ".join(problems[:_MAX_LISTED]))
    return state
