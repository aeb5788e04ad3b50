"""Adaptive discriminator augmentation (ADA, Karras et al. 2020), a compact subset in torch.

Implemented ops, each applied to a sample with probability p (as ADA's `bgc` pipeline, strengths
as its defaults): x-flip, rotation by a multiple of 90°, integer translation up to 1/8 of the side
(reflect padding), brightness (N(0, 0.2)), contrast (log-normal, σ = 0.5·ln 2), luma flip, hue
rotation (U(−π, π)) and saturation (log-normal, σ = ln 2). Not implemented: the general
geometric ops (isotropic/anisotropic scaling, arbitrary rotation, fractional translation), the
image-space filters and the corruptions. All ops are differentiable in the images, so the
generator trains through them.

The random parameters are drawn from a torch.Generator for the global batch and each process
takes its own rows, so N processes augment exactly as one process with the whole batch does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import distributed

BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5
HUE_MAX = 1.0
SATURATION_STD = 1.0
TRANSLATE_MAX = 0.125
LUMA_AXIS = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3)


def augment(images: Tensor, p: float, generator: torch.Generator, context: distributed.Context) -> Tensor:
    """images [b,3,H,W] in [-1,1] (this process's rows of a global batch of b·N) → augmented, same shape."""
    if p <= 0:
        return images
    total = len(images) * context.world_size

    def chosen() -> Tensor:
        return distributed.own_rows(torch.rand(total, generator=generator) < p, context)

    def uniform(*shape) -> Tensor:
        return distributed.own_rows(torch.rand(total, *shape, generator=generator), context)

    def normal() -> Tensor:
        return distributed.own_rows(torch.randn(total, generator=generator), context)

    # Draw every parameter, used or not, in a fixed order: the stream does not depend on p's draws.
    flip, flip_on = uniform() < 0.5, chosen()
    quarter, quarter_on = (uniform() * 4).long(), chosen()
    shift, shift_on = (uniform(2) * 2 - 1) * TRANSLATE_MAX, chosen()
    brightness, brightness_on = normal() * BRIGHTNESS_STD, chosen()
    contrast, contrast_on = torch.exp2(normal() * CONTRAST_STD), chosen()
    luma, luma_on = uniform() < 0.5, chosen()
    hue, hue_on = (uniform() * 2 - 1) * math.pi * HUE_MAX, chosen()
    saturation, saturation_on = torch.exp2(normal() * SATURATION_STD), chosen()

    side = images.shape[-1]
    out = []
    for index, image in enumerate(images):
        if flip_on[index] and flip[index]:
            image = image.flip(-1)
        if quarter_on[index]:
            image = torch.rot90(image, int(quarter[index]), (-2, -1))
        if shift_on[index]:
            image = _translate(image, [round(float(v) * side) for v in shift[index]])
        out.append(image)
    images = torch.stack(out)

    color = torch.eye(4).repeat(len(images), 1, 1)
    v = torch.cat([LUMA_AXIS, torch.zeros(1)])
    vv = torch.outer(v, v)
    for i in range(len(images)):
        matrix = torch.eye(4)
        if brightness_on[i]:
            matrix = _translate3(float(brightness[i])) @ matrix
        if contrast_on[i]:
            matrix = torch.diag(torch.tensor([float(contrast[i])] * 3 + [1.0])) @ matrix
        if luma_on[i] and luma[i]:
            matrix = (torch.eye(4) - 2 * vv) @ matrix
        if hue_on[i]:
            matrix = _rotate3(LUMA_AXIS, float(hue[i])) @ matrix
        if saturation_on[i]:
            matrix = (vv + (torch.eye(4) - vv) * float(saturation[i])) @ matrix
        color[i] = matrix
    color = color.to(images)
    flat = images.flatten(2)  # [b,3,HW]
    return (color[:, :3, :3] @ flat + color[:, :3, 3:]).view_as(images)


def _translate(image: Tensor, shift: list[int]) -> Tensor:
    """image [3,H,W] moved by (dx, dy) pixels, the uncovered border filled by reflection."""
    dx, dy = shift
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return image
    height, width = image.shape[-2:]
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="reflect")[0]
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def _translate3(value: float) -> Tensor:
    matrix = torch.eye(4)
    matrix[:3, 3] = value
    return matrix


def _rotate3(axis: Tensor, angle: float) -> Tensor:
    """4×4 rotation by `angle` about the unit `axis` (Rodrigues)."""
    x, y, z = axis.tolist()
    c, s = math.cos(angle), math.sin(angle)
    cross = torch.tensor([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    matrix = torch.eye(4)
    matrix[:3, :3] = c * torch.eye(3) + s * cross + (1 - c) * torch.outer(axis, axis)
    return matrix


class AdaptiveProbability:
    """ADA's p, adjusted every `every` D steps by sign(r_t − target)·(images seen)/length, where
    r_t = E[sign(D(real))] over those steps and all processes (rosinality's AdaptiveAugment)."""

    def __init__(self, target: float, length: int, every: int, p: float = 0.0):
        self.target, self.length, self.every = target, length, every
        self.p, self.r_t = p, 0.0
        self.signs, self.count, self.updates = 0.0, 0.0, 0

    def tune(self, real_logits: Tensor, context: distributed.Context) -> float:
        self.signs += float(torch.sign(real_logits.detach()).sum())
        self.count += len(real_logits)
        self.updates += 1
        if self.updates % self.every == 0:
            total = distributed.mean_over_processes(torch.tensor([self.signs, self.count], dtype=torch.float64),
                                                    context) * context.world_size
            signs, count = total.tolist()
            self.r_t = signs / count
            self.p = min(1.0, max(0.0, self.p + (1 if self.r_t > self.target else -1) * count / self.length))
            self.signs, self.count, self.updates = 0.0, 0.0, 0
        return self.p

    def state_dict(self) -> dict:
        return {"p": self.p, "r_t": self.r_t, "signs": self.signs, "count": self.count, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.r_t = state["p"], state["r_t"]
        self.signs, self.count, self.updates = state["signs"], state["count"], state["updates"]
