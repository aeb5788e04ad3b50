"""Shared set-up of the timing benchmarks: engines for a preset, input faces, FLOP counts."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from deghost.runtime.images import read_image

ASTRONAUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "images" / "astronaut.png"


def faces(count: int) -> list[np.ndarray]:
    """`count` face images (the bundled public-domain portrait, mirrored on odd indices)."""
    face = read_image(ASTRONAUT).rgb
    return [face if i % 2 == 0 else np.ascontiguousarray(face[:, ::-1]) for i in range(count)]


def timed(run, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = run(*args, **kwargs)
    return time.perf_counter() - start, result


def pipeline_gflop(torch_module, preset: str, suppress: str) -> dict[str, float]:
    """GFLOP per image of each stage the pipeline runs for one edit (torch.utils.flop_counter)."""
    from deghost.export.torch_pipeline import TorchPipeline
    from deghost.presets import get_preset
    from deghost.training.flops import forward_gflop
    from deghost.training.models.zoo import example_inputs

    spec = get_preset(preset)
    stages = ["encoder", "generator", "diffcam", "suppressor" if suppress == "network" else "deghosting"]
    graphs = TorchPipeline.random(preset, seed=0, stages=stages).graphs
    image = example_inputs("suppressor", spec)[0][:, :3]
    mask_input = example_inputs("diffcam", spec)
    inputs = {
        "encoder": (image,),
        "generator": (torch_module.zeros(2, spec.n_latent, spec.style_dim),),  # reconstruction + edit
        "diffcam": (*mask_input, torch_module.zeros(1, dtype=torch_module.int64)),
        "suppressor": (image, image, torch_module.zeros(1, 1, spec.mask_size, spec.mask_size)),
    }
    inputs["deghosting"] = inputs["suppressor"]
    return {stage: forward_gflop(graphs[stage], *inputs[stage]) for stage in stages}
