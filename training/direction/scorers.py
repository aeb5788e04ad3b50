"""Render W+ latents and score every classifier class: in PyTorch, or through the exported graphs.

A single image has no edit to classify, so its score is the Diff-CAM classifier's logits for
shared(x) − shared(x̄), x̄ being the render of the mean latent w̄: "what x changed relative to the average face",
the same question the classifier answers for an edit. Both scorers compute exactly this (the graphs' diffcam stage
takes x̄ as its `recon256`), from the same weights, so either serves every job; which is faster is measured in
benchmarks/direction_speed.py.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Scorer(Protocol):
    n_classes: int
    kind: str  # "pytorch" or the engines' backend, for the JSON and the progress bar

    def __call__(self, wplus: np.ndarray) -> np.ndarray:
        """wplus [B, n_latent, 512] float32 → logits [B, n_classes] of C(shared(x) − shared(x̄))."""


class TorchScorer:
    """The generator's synthesis, area-pooled to the classifier's input size, and the classifier, in PyTorch.

    `classifier` has DiffCam's parts: `shared`, `classifier` and `logits` (shared(x̄) is computed once)."""

    kind = "pytorch"

    def __init__(self, generator, classifier, mean_wplus: np.ndarray, input_size: int):
        import torch

        self.generator, self.classifier, self.input_size = generator.eval(), classifier.eval(), input_size
        self.n_classes = classifier.fc.out_features
        with torch.no_grad():
            self.reference = classifier.shared(self._render(torch.from_numpy(mean_wplus[None]).float()))

    def _render(self, wplus):
        import torch.nn.functional as F

        image = self.generator.synthesis(wplus)
        factor = image.shape[-1] // self.input_size
        return image if factor <= 1 else F.avg_pool2d(image, factor)  # the graphs' area pooling

    def __call__(self, wplus: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            shared = self.classifier.shared(self._render(torch.from_numpy(np.ascontiguousarray(wplus)).float()))
            features = self.classifier.classifier(shared - self.reference)
            return self.classifier.logits(features).numpy()


class EngineScorer:
    """The exported generator and diffcam stages (OpenVINO / ONNX Runtime / TensorRT, as `deghost edit` runs
    them); `pipeline` is a `deghost.runtime.pipeline.Pipeline`."""

    def __init__(self, pipeline, mean_wplus: np.ndarray):
        self.pipeline = pipeline
        self.n_classes = pipeline.preset.n_classes
        self.reference = self._render(mean_wplus[None].astype(np.float32))
        pipeline.backend("diffcam")  # opened now, so configuration errors come first and `kind` names both
        self.kind = " ".join(f"{stage}: {how}" for stage, how in pipeline.describe().items())

    def _render(self, wplus: np.ndarray) -> np.ndarray:
        out = self.pipeline.backend("generator").run({"w": np.ascontiguousarray(wplus, np.float32)})
        return out["image256"]

    def __call__(self, wplus: np.ndarray) -> np.ndarray:
        images = self._render(wplus)
        feeds = {"recon256": np.repeat(self.reference, len(images), 0), "edit256": images,
                 "class_index": np.zeros(len(images), np.int64)}
        return self.pipeline.backend("diffcam").run(feeds)["logits"]
