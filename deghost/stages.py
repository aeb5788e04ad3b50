"""The stage table: names, inputs and outputs of every exported graph (docs/design.md §3), as data.

Export, engine building, the runtime and the benchmarks all read this table; a stage's tensor
names are the contract between an ONNX graph, its TensorRT engine and the code that feeds it.
Shapes are tuples whose first entry is the symbolic batch "B"; sizes come from a preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deghost.presets import Preset, get_preset

BATCH = "B"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ("B", ...) with the batch symbolic
    dtype: str  # numpy dtype name
    meaning: str

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if dim == BATCH else dim for dim in self.shape)


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    meaning: str

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def _image(name: str, side: int, meaning: str, channels: int = 3) -> TensorSpec:
    return TensorSpec(name, (BATCH, channels, side, side), "float32", meaning)


def stage_table(preset: str | Preset = "ffhq1024") -> dict[str, Stage]:
    """Every stage of the pipeline for `preset`, in data-flow order."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    s, m = p.image_size, p.mask_size
    mask = TensorSpec("mask", (BATCH, 1, m, m), "float32", "Diff-CAM mask in [0,1]")
    blend_inputs = (
        _image("image", s, "original I, RGB in [-1,1]"),
        _image("edit", s, "edited render T, RGB in [-1,1]"),
        mask,
    )
    blend_outputs = (
        _image("fused", s, "T·M + I·(1−M), M upsampled (nearest)"),
        _image("output", s, "ghosting-suppressed result, RGB ~[-1,1]"),
    )
    stages = [
        Stage("encoder",
              (_image("image", s, "aligned face I, RGB in [-1,1]"),),
              (TensorSpec("w", (BATCH, p.n_latent, p.style_dim), "float32", "W+ latent, latent_avg added"),),
              "pSp inversion: area-downsample to the encoder size, encode, add latent_avg"),
        Stage("generator",
              (TensorSpec("w", (BATCH, p.n_latent, p.style_dim), "float32", "W+ latent"),),
              (_image("image", s, "render, RGB ~[-1,1]"), _image("image256", m, "render area-pooled to the mask size")),
              "StyleGAN2 synthesis with fixed noise"),
        Stage("diffcam",
              (_image("recon256", m, "reconstruction I' pooled, [-1,1]"), _image("edit256", m, "edit T pooled, [-1,1]"),
               TensorSpec("class_index", (BATCH,), "int64", "classifier class of the edited attribute")),
              (mask, TensorSpec("logits", (BATCH, p.n_classes), "float32", "attribute logits of T − I'")),
              "differential-activation CAM in closed form"),
        Stage("suppressor", blend_inputs, blend_outputs,
              "fusion, then MAResU-Net on concat(I, F_fused) (ours)"),
        Stage("deghosting", blend_inputs, blend_outputs,
              "fusion, then EOGI Deghosting on the fused image area-pooled to its input size (baseline)"),
        Stage("face_parser",
              (_image("image", p.parser_size, "RGB in [-1,1]"),),
              (TensorSpec("labels", (BATCH, p.parser_size, p.parser_size), "int64", "BiSeNet class per pixel"),),
              "BiSeNet face parsing (ImageNet normalisation and argmax inside)"),
    ]
    return {stage.name: stage for stage in stages}


STAGE_NAMES = tuple(stage_table())

# Each stage's official checkpoint file, as `deghost build/export --checkpoints DIR` looks it up and as
# `deghost train` writes it (the suppressor also takes --suppressor FILE).
CHECKPOINT_FILES = {
    "encoder": "psp_ffhq_encode.pt",
    "generator": "psp_ffhq_encode.pt",  # pSp's decoder is the generator the encoder inverts into
    "diffcam": "diff_cam_weight.pt",
    "suppressor": "maresunet.pt",
    "deghosting": "deghosting.pt",
    "face_parser": "79999_iter.pth",
}


def example_feeds(stage: Stage, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs in each tensor's range: images in [-1,1], masks in [0,1], class 0, W+ standard normal.

    For timing and for precision checks (bf16 vs f32) of a graph without its PyTorch model."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in stage.inputs:
        shape = spec.concrete_shape(batch)
        if spec.dtype == "int64":
            feeds[spec.name] = np.zeros(shape, np.int64)
        elif spec.name == "w":
            feeds[spec.name] = rng.standard_normal(shape, dtype=np.float32)
        elif spec.name == "mask":
            feeds[spec.name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[spec.name] = rng.random(shape, dtype=np.float32) * 2 - 1
    return feeds
