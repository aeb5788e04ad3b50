"""The editing pipeline in PyTorch, chaining the stage graphs: the reference the runtime must equal.

Same steps, same row order and same result type as `deghost.runtime.pipeline.Pipeline.edit`, but
every stage is the `export.graphs` module itself (built by `export.sources`, exactly as the exporter
builds it), so runtime-vs-reference differences isolate the export and the glue. The torch-free
pieces (seamlessClone and the face mask, image conversion, directions) are the runtime's own: they
exist once. Used by the tests and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from deghost.presets import Preset, get_preset
from deghost.runtime.pipeline import BLEND, GLUE, SUPPRESS_STAGES, poisson_rows
from deghost.runtime.results import Edit, EditResult
from deghost.stages import STAGE_NAMES

from .graphs import area_downsample, fuse
from .sources import random_sources


class TorchPipeline:
    """Stage graphs in eval mode, keyed by stage name (any subset that covers the modes used)."""

    def __init__(self, graphs: dict[str, nn.Module], preset: str | Preset, untrained: bool = True):
        self.graphs = {stage: graph.eval() for stage, graph in graphs.items()}
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.untrained = untrained

    @classmethod
    def random(cls, preset: str | Preset = "tiny", seed: int = 0, stages: Sequence[str] = STAGE_NAMES) -> TorchPipeline:
        """The graphs an `export/build.py --random-init SEED` folder was exported from."""
        spec = get_preset(preset) if isinstance(preset, str) else preset
        sources = random_sources(spec, seed, tuple(stages))
        return cls({stage: source.load() for stage, source in sources.items()}, spec)

    @torch.no_grad()
    def edit(self, images: np.ndarray, edits: Sequence[Edit], suppress: str | Sequence[str] = "network") -> EditResult:
        """images float32 [B,3,S,S] in [-1,1]; edits as from `Pipeline.edits` → EditResult (row i·K + k)."""
        started, timings = time.perf_counter(), {}

        def timed(stage, *inputs):
            start = time.perf_counter()
            out = self.graphs[stage](*inputs)
            timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3
            return out

        modes = [suppress] if isinstance(suppress, str) else list(dict.fromkeys(suppress))
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        n_images, n_edits = len(x), len(edits)
        w = timed("encoder", x)
        directions = torch.stack([torch.from_numpy(e.direction) for e in edits])  # [K,L,512]
        alphas = torch.tensor([e.alpha for e in edits], dtype=torch.float32)[:, None, None]
        w_edit = (w[:, None] + alphas * directions).reshape(-1, *w.shape[1:])  # image-major rows
        rendered, rendered256 = timed("generator", torch.cat([w, w_edit]))
        source = torch.arange(n_images).repeat_interleave(n_edits)
        recon256, edit256, edit = rendered256[:n_images][source], rendered256[n_images:], rendered[n_images:]
        classes = torch.tensor([-1 if e.class_index is None else e.class_index for e in edits]).repeat(n_images)
        mask, logits = timed("diffcam", recon256, edit256, classes.clamp(min=0))
        if (classes < 0).any():
            classes = torch.where(classes < 0, logits.argmax(1), classes)
            mask, logits = timed("diffcam", recon256, edit256, classes)
        image_rows = x[source]
        outputs, fused = {}, None
        for mode in modes:
            if mode in ("network", "eogi"):
                fused_here, outputs[mode] = timed(SUPPRESS_STAGES[mode], image_rows, edit, mask)
                fused = fused_here if fused is None else fused
        fused = fuse(image_rows, edit, mask) if fused is None else fused
        if "none" in modes:
            outputs["none"] = fused
        if "poisson" in modes:
            labels = timed("face_parser", area_downsample(torch.cat([fused, x]), self.preset.parser_size)).numpy()
            start = time.perf_counter()
            outputs["poisson"] = torch.from_numpy(self._poisson(fused.numpy(), images, labels, source.numpy()))
            timings[BLEND] = (time.perf_counter() - start) * 1e3
        timings[GLUE] = (time.perf_counter() - started) * 1e3 - sum(timings.values())
        return EditResult(
            images=x.numpy(), outputs={mode: outputs[mode].numpy() for mode in modes}, fused=fused.numpy(),
            mask=mask.numpy(),
            logits=logits.numpy(), class_index=classes.numpy(), w=w.numpy(), w_edit=w_edit.numpy(),
            edits=list(edits), timings_ms=timings, untrained=self.untrained,
        )

    def _poisson(self, fused: np.ndarray, images: np.ndarray, labels: np.ndarray, source: np.ndarray) -> np.ndarray:
        """seamlessClone(F_fused → I, M_face) per row, with labels of [fused rows..., images...]."""
        return poisson_rows(fused, images, labels, source, self.preset.image_size)
