"""The suppressor's loss, L = 0.1·MSE + 1·L_percept + 0.1·L_adv (docs/design.md §1), and the discriminator's.

Images are [B,3,H,W] in [-1,1] throughout; the perceptual loss maps them to ImageNet normalisation
itself, because that is what torchvision's VGG-16 weights were trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.imagenet import imagenet_normalize
from .models.vgg import VGG16Features

# The paper's layers and weights: deeper features count more.
PERCEPTUAL_WEIGHTS = {"conv2_2": 1 / 16, "conv3_2": 1 / 8, "conv4_3": 1 / 4, "pool5": 1.0}


class PerceptualLoss(nn.Module):
    """Σ_l w_l · MSE(VGG_l(output), VGG_l(target)) over PERCEPTUAL_WEIGHTS; VGG frozen.

    Args:
        vgg: VGG-16 features tapping at least the layers of `weights` (torchvision weights, or random).
        weights: {layer name: weight}.
    """

    def __init__(self, vgg: VGG16Features, weights: dict[str, float] = PERCEPTUAL_WEIGHTS):
        super().__init__()
        missing = set(weights) - set(vgg.layers)
        if missing:
            raise ValueError(f"the VGG-16 does not tap {sorted(missing)}; build it with layers={tuple(weights)}")
        self.vgg = vgg.eval().requires_grad_(False)
        self.weights = dict(weights)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """output, target: [B,3,H,W] in [-1,1] (gradient flows to `output` only) → scalar."""
        with torch.no_grad():
            target_features = self.vgg(imagenet_normalize(target, (-1.0, 1.0)))
        output_features = self.vgg(imagenet_normalize(output, (-1.0, 1.0)))
        return sum(w * F.mse_loss(output_features[name], target_features[name]) for name, w in self.weights.items())


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating logistic loss of the suppressor: mean softplus(−D(output)). fake_logits: [B,1]."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic loss of the discriminator: mean softplus(−D(target)) + mean softplus(D(output))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1: mean over the batch of ‖∂ΣD(real)/∂real‖² (real_images must require grad)."""
    (gradient,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return gradient.square().sum((1, 2, 3)).mean()
