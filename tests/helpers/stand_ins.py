"""STAND-INS for the networks in clip tests (named as such): Pipelines whose stages are replaced by simple
deterministic functions, so the clip's own steps (decode, track, align, smooth, paste, encode, chunks)
are what is tested. Faces are still found by the real bundled face models."""

from __future__ import annotations

import numpy as np

from deghost.runtime.pipeline import EditResult, Pipeline


class StandInPipeline(Pipeline):
    """`invert` → `latents(batch)`, `run` → every edit's row = `render(batch, given_w)`."""

    def prepare(self, suppress="network"):
        return {}

    def latents(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), self.preset.n_latent, self.preset.style_dim), np.float32)

    def render(self, batch: np.ndarray, w: np.ndarray) -> np.ndarray:
        return batch

    def invert(self, images):
        return self.latents(self.model_batch(images)[0])

    def run(self, images, edits, suppress="network", given_w=None):
        batch = self.model_batch(images)[0]
        rows = np.repeat(self.render(batch, given_w), len(edits), axis=0)
        n = len(rows)
        return EditResult(images=batch, outputs={suppress: rows}, fused=rows, mask=np.zeros((n, 1, 8, 8), np.float32),
                          logits=np.zeros((n, 1), np.float32), class_index=np.zeros(n, np.int64), w=given_w,
                          w_edit=np.repeat(given_w, len(edits), axis=0), edits=list(edits), timings_ms={},
                          untrained=True)


class IdentityStandIn(StandInPipeline):
    """A perfect reconstruction (the untrained tiny networks render noise): every edit returns the aligned
    crop it was given."""


class LatentShadeStandIn(StandInPipeline):
    """Output depends on both steadied things a chunk border could break: the crop (aligned to the smoothed
    quad) and the latents (smoothed over time): w = the crop's mean level, the 'edit' = the crop tinted by w."""

    def latents(self, batch):
        means = batch.mean(axis=(1, 2, 3))
        return np.broadcast_to(means[:, None, None], (len(batch), self.preset.n_latent, self.preset.style_dim)
                               ).astype(np.float32)

    def render(self, batch, w):
        return np.clip(batch * 0.5 + w[:, 0, 0, None, None, None] * 4, -1, 1).astype(np.float32)
