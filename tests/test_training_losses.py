"""The suppressor's loss terms against values computed by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from deghost.training.losses import (
    PERCEPTUAL_WEIGHTS,
    PerceptualLoss,
    discriminator_loss,
    generator_adversarial_loss,
    r1_penalty,
)
from deghost.training.models.imagenet import imagenet_normalize
from deghost.training.models.zoo import build


def test_imagenet_normalization_maps_black_and_white_to_the_imagenet_extremes():
    x = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    y = imagenet_normalize(x, (-1.0, 1.0))
    torch.testing.assert_close(imagenet_normalize((x + 1) / 2, (0.0, 1.0)), y)  # the same pixels in [0, 1]
    torch.testing.assert_close(imagenet_normalize((x + 1) * 127.5, (0.0, 255.0)), y)  # and in 8-bit levels
    assert y[0, :, 0, 0].tolist() == pytest.approx([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    assert y[0, :, 0, 1].tolist() == pytest.approx([0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225])


def test_perceptual_loss_is_the_weighted_mse_of_conv2_2_conv3_2_conv4_3_and_pool5():
    vgg = build("vgg16", seed=0)
    loss = PerceptualLoss(vgg)
    generator = torch.Generator().manual_seed(0)
    output, target = torch.rand(2, 2, 3, 32, 32, generator=generator) * 2 - 1
    # By hand: torchvision's feature indices 8, 13, 22, 30 (after ReLU 2_2, ReLU 3_2, ReLU 4_3, pool 5).
    expected = 0.0
    for index, weight in ((8, 1 / 16), (13, 1 / 8), (22, 1 / 4), (30, 1.0)):
        features = vgg.features[: index + 1]
        a = features(imagenet_normalize(output, (-1.0, 1.0)))
        b = features(imagenet_normalize(target, (-1.0, 1.0)))
        expected += weight * ((a - b) ** 2).mean().item()
    assert PERCEPTUAL_WEIGHTS == {"conv2_2": 1 / 16, "conv3_2": 1 / 8, "conv4_3": 1 / 4, "pool5": 1.0}
    assert loss(output, target).item() == pytest.approx(expected, rel=1e-5)
    assert loss(target, target).item() == 0.0


def test_perceptual_loss_sends_gradient_to_the_output_only():
    loss = PerceptualLoss(build("vgg16", seed=0))
    output = torch.zeros(1, 3, 32, 32, requires_grad=True)
    target = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss(output, target).backward()
    assert output.grad is not None and target.grad is None
    assert all(p.grad is None for p in loss.vgg.parameters())


def test_adversarial_losses_are_the_non_saturating_logistic_ones():
    fake = torch.tensor([[0.0], [2.0]])
    real = torch.tensor([[1.0], [-3.0]])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert generator_adversarial_loss(fake).item() == pytest.approx((softplus(-0.0) + softplus(-2.0)) / 2)
    expected = (softplus(-1.0) + softplus(3.0)) / 2 + (softplus(0.0) + softplus(2.0)) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(expected)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    weight = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    real = torch.rand(4, 3, 2, 2, requires_grad=True)
    logits = (real * weight).sum((1, 2, 3)).unsqueeze(1)  # D(x) = <w, x>: ∇D = w for every sample
    assert r1_penalty(logits, real).item() == pytest.approx(4 * (1 + 4 + 0.25))
