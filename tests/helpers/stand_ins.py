"""STAND-INS for the networks in clip tests (named as such): Pipelines whose stages are replaced by simple
deterministic functions, so the clip's own steps (decode, track, align, smooth, fuse, paste, encode,
chunks) are what is tested. Faces are still found by the real bundled face models, and fusion (suppress
"none": F = T·M + I·(1−M)) is the real Pipeline.suppress."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np

from deghost.runtime.pipeline import Pipeline
from deghost.runtime.results import Rendered

MASK_SIDE = 8  # the stand-in's Diff-CAM masks: 8×8, upsampled to the crop by the real fusion


class StandInPipeline(Pipeline):
    """`invert` → `latents(batch)`; `render` → every edit T = `draw(batch, w)` with Diff-CAM masks
    `masks(batch, w)` (default 1: the edit everywhere); `face_labels` → `labels(batch)` (default: skin
    everywhere). No backend is opened: `backend` answers a description only (a stand-in that computed with
    one would not be a stand-in)."""

    def prepare(self, suppress="network", warm=None):
        return {}

    def backend(self, stage):
        return SimpleNamespace(kind="stand-in", concurrent=True, max_batch=None)

    def _exclusive(self, modes):
        return nullcontext()

    def latents(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), self.preset.n_latent, self.preset.style_dim), np.float32)

    def draw(self, batch: np.ndarray, w: np.ndarray) -> np.ndarray:
        return batch

    def masks(self, batch: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.ones((len(batch), 1, MASK_SIDE, MASK_SIDE), np.float32)

    def labels(self, batch: np.ndarray) -> np.ndarray:
        side = self.preset.parser_size
        return np.ones((len(batch), side, side), np.int64)

    def invert(self, images):
        return self.latents(self.model_batch(images)[0])

    def render(self, images, edits, given_w=None):
        batch = self.model_batch(images)[0]
        w = self.latents(batch) if given_w is None else given_w
        k, n = len(edits), len(batch) * len(edits)
        return Rendered(images=batch, edit=np.repeat(self.draw(batch, w), k, axis=0),
                        mask=np.repeat(self.masks(batch, w), k, axis=0), logits=np.zeros((n, 1), np.float32),
                        class_index=np.zeros(n, np.int64), w=w, w_edit=np.repeat(w, k, axis=0), edits=list(edits),
                        timings_ms={})

    def run(self, images, edits, suppress="network", given_w=None):
        return self.suppress(self.render(images, edits, given_w), suppress)

    def face_labels(self, images):
        return self.labels(self.model_batch(images)[0])


class IdentityStandIn(StandInPipeline):
    """A perfect reconstruction (the untrained tiny networks render noise): every edit returns the aligned
    crop it was given."""


class LatentShadeStandIn(StandInPipeline):
    """Output depends on every steadied thing a chunk border could break: the crop (aligned to the smoothed
    quad), the latents (smoothed over time), the Diff-CAM masks and the head regions (smoothed over time):
    w = the crop's mean level, the 'edit' = the crop tinted by w, the mask = the crop's mean level mapped to
    [0.5, 1], and the head = wherever the crop is not darker than its own mean."""

    def latents(self, batch):
        means = batch.mean(axis=(1, 2, 3))
        return np.broadcast_to(means[:, None, None], (len(batch), self.preset.n_latent, self.preset.style_dim)
                               ).astype(np.float32)

    def draw(self, batch, w):
        return np.clip(batch * 0.5 + w[:, 0, 0, None, None, None] * 4, -1, 1).astype(np.float32)

    def masks(self, batch, w):
        level = 0.75 + 0.25 * np.clip(batch.mean(axis=(1, 2, 3)) * 4, -1, 1)
        return np.broadcast_to(level[:, None, None, None], (len(batch), 1, MASK_SIDE, MASK_SIDE)).astype(np.float32)

    def labels(self, batch):
        grey = batch.mean(axis=1)
        side = self.preset.parser_size
        step = grey.shape[-1] // side
        grey = grey[:, ::step, ::step]
        return np.where(grey >= grey.mean(axis=(1, 2), keepdims=True), 1, 0).astype(np.int64)
