"""What the pipeline returns: an `Edit` (one direction at one strength), an `EditResult` (every row's
outputs), a `Rendered` (the edits and their Diff-CAM masks before suppression) and a `PhotoResult` (one
input's photos with its faces pasted back). Rows are image-major: row i·K + k is image i with edit k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .faces import Face
from .images import from_model_output
from .timing import add_timings


@dataclass(frozen=True, eq=False)  # eq would compare the direction arrays element-wise
class Edit:
    """One edit applied to every image: w + alpha·direction, masked with Diff-CAM class `class_index`.

    `class_index` None (a direction file of no known attribute, no class given) means: per row, the
    class with the largest logit of C(E_t(T) − E_t(I')), the attribute the edit changed most.
    """

    attribute: str
    alpha: float
    class_index: int | None
    direction: np.ndarray = field(repr=False)  # [n_latent,512] float32, ‖·‖_F = 1

    @property
    def label(self) -> str:
        return f"{self.attribute}{self.alpha:+g}"


@dataclass
class EditResult:
    """The pipeline's results. Row r = i·K + k is image i with edit k (K = len(edits), N = B·K rows).

    Images are float32 [N,3,S,S] in [-1,1] (S = image side of the preset); `rgb()` gives uint8.
    """

    images: np.ndarray  # [B,3,S,S] the inputs I as the models saw them
    outputs: dict[str, np.ndarray]  # suppress mode → [N,3,S,S], in the order asked for
    fused: np.ndarray  # [N,3,S,S] F_fused = T·M + I·(1−M)
    mask: np.ndarray  # [N,1,m,m] Diff-CAM mask in [0,1]
    logits: np.ndarray  # [N,n_classes] classifier scores of T − I'
    class_index: np.ndarray  # [N] int64, the Diff-CAM class each mask is for
    w: np.ndarray  # [B,n_latent,512] inverted latents
    w_edit: np.ndarray  # [N,n_latent,512] edited latents
    edits: list[Edit]
    timings_ms: dict[str, float]  # per stage, plus BLEND and GLUE; for this whole call
    untrained: bool  # the weights are random (seeded): results show plumbing and timing only
    warnings: list[str] = field(default_factory=list)

    @property
    def output(self) -> np.ndarray:
        """The first requested suppress mode's output, [N,3,S,S]."""
        return next(iter(self.outputs.values()))

    def row(self, image: int, edit: int = 0) -> int:
        return image * len(self.edits) + edit

    def rgb(self, name: str | None = None) -> np.ndarray:
        """uint8 [N,S,S,3] of a suppress mode's output (default: the first) or of "fused"."""
        return from_model_output(self.fused if name == "fused" else self.outputs[name] if name else self.output)

    def for_images(self, first: int, count: int) -> EditResult:
        """The results of images first … first + count − 1 alone (rows renumbered from 0; views, not copies);
        timings and warnings stay those of the whole call."""
        images = slice(first, first + count)
        rows = slice(first * len(self.edits), (first + count) * len(self.edits))
        return EditResult(
            images=self.images[images], outputs={mode: out[rows] for mode, out in self.outputs.items()},
            fused=self.fused[rows], mask=self.mask[rows], logits=self.logits[rows],
            class_index=self.class_index[rows], w=self.w[images], w_edit=self.w_edit[rows], edits=self.edits,
            timings_ms=dict(self.timings_ms), untrained=self.untrained, warnings=list(self.warnings),
        )


@dataclass
class Rendered:
    """`Pipeline.render`'s result: each edit T and its Diff-CAM mask, before ghosting is suppressed
    (`Pipeline.suppress` finishes it, with these masks or with masks the caller changed, e.g. a clip's
    steadied over time). Rows as EditResult's: r = i·K + k is image i with edit k; host arrays."""

    images: np.ndarray  # [B,3,S,S] the inputs I
    edit: np.ndarray  # [N,3,S,S] the edits T in [-1,1]
    mask: np.ndarray  # [N,1,m,m] Diff-CAM mask in [0,1]
    logits: np.ndarray  # [N,n_classes]
    class_index: np.ndarray  # [N] int64
    w: np.ndarray  # [B,n_latent,512]
    w_edit: np.ndarray  # [N,n_latent,512]
    edits: list[Edit]
    timings_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def for_images(self, first: int, count: int) -> Rendered:
        """Images first … first + count − 1 alone (views, rows renumbered from 0)."""
        images = slice(first, first + count)
        rows = slice(first * len(self.edits), (first + count) * len(self.edits))
        return Rendered(self.images[images], self.edit[rows], self.mask[rows], self.logits[rows],
                        self.class_index[rows], self.w[images], self.w_edit[rows], self.edits, dict(self.timings_ms),
                        list(self.warnings))

    @staticmethod
    def join(parts: Sequence[Rendered]) -> Rendered:
        """Several results of the same edits as one, images in order (timings summed)."""
        if not parts:
            raise ValueError("nothing to join")
        timings: dict[str, float] = {}
        for part in parts:
            add_timings(timings, part.timings_ms)
        stack = lambda name: np.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        return Rendered(stack("images"), stack("edit"), stack("mask"), stack("logits"), stack("class_index"),
                        stack("w"), stack("w_edit"), parts[0].edits, timings,
                        [w for part in parts for w in part.warnings])


@dataclass
class PhotoResult:
    """One input's results (`edit_photo`, `edit_photos`, `edit_inputs`): `photos[mode][k]` is the whole photo
    (input's H×W) with edit k pasted into every chosen face; `faces` the faces in the order of `result`'s images;
    `result` the edit of this photo's aligned crops (row `result.row(face, k)`; timings: the stages' for the
    whole batch, FACES and PASTE this photo's). For an aligned crop (FaceOptions.aligned) `photos` are the
    edited crops and `faces` is empty."""

    photos: dict[str, list[np.ndarray]]
    faces: list[Face]
    result: EditResult
