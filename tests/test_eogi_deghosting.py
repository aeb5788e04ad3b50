"""EOGI Deghosting: official layout loads strictly, exact parameter counts, a sane tiny forward."""

from __future__ import annotations

import pytest
import torch

from deghost.training.models.eogi_deghosting import Deghosting, deghosting_from_official
from tests.helpers.reference import load_reference

TOTAL_PARAMS = 174_196_615
TRAINABLE_PARAMS = 143_826_555
GENERATOR_PARAMS = 30_370_060


@pytest.fixture(scope="module")
def official_state_dict():
    return load_reference("eogi_deghosting").state_dict(seed=0)


@pytest.fixture(scope="module")
def full_model():
    """The 128 → 1024 model; built once because it holds 174 M parameters (never run forward here)."""
    return Deghosting(in_size=128, out_size=1024)


@pytest.fixture(scope="module")
def tiny_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Deghosting(in_size=32, out_size=256).eval()


@pytest.fixture(scope="module")
def tiny_outputs(tiny_model):
    """(images [2,3,32,32], outputs [2,3,256,256]): one forward shared by the tests (~335 GFLOP/image)."""
    images = _image(2, 32, seed=1)
    with torch.no_grad():
        return images, tiny_model(images)


def _image(batch: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def test_official_layout_loads_strictly_after_key_remapping(full_model, official_state_dict):
    converted = deghosting_from_official(official_state_dict)
    full_model.load_state_dict(converted, strict=True)
    loaded = full_model.state_dict()
    for key in ("FCN.encoder.6.3.weight", "FCN.fusion_out.5.weight", "FCN.decoder.3.2.bias"):
        assert torch.equal(loaded[key], official_state_dict[key])
    # The generator keys are renamed, not dropped: every official value arrives somewhere.
    assert sum(v.numel() for v in converted.values()) == sum(v.numel() for v in official_state_dict.values())


def test_remapping_leaves_the_official_state_dict_untouched(official_state_dict):
    keys_before = list(official_state_dict)
    converted = deghosting_from_official(official_state_dict)
    assert list(official_state_dict) == keys_before
    assert "generator.constant_input.input" in official_state_dict
    assert "generator.constant_input.input" not in converted
    assert all(not key.startswith("generator.style_mapping.") for key in converted)


def test_remapping_refuses_a_state_dict_without_generator(official_state_dict):
    fcn_only = {k: v for k, v in official_state_dict.items() if k.startswith("FCN.")}
    with pytest.raises(KeyError, match="generator"):
        deghosting_from_official(fcn_only)


def test_parameter_counts_match_the_official_model(full_model):
    total = sum(p.numel() for p in full_model.parameters())
    trainable = sum(p.numel() for p in full_model.parameters() if p.requires_grad)
    generator = sum(p.numel() for p in full_model.generator.parameters())
    assert (total, trainable, generator) == (TOTAL_PARAMS, TRAINABLE_PARAMS, GENERATOR_PARAMS)
    assert not any(p.requires_grad for p in full_model.generator.parameters())


def test_tiny_forward_gives_a_finite_image_of_the_output_size(tiny_outputs):
    _, out = tiny_outputs
    assert out.shape == (2, 3, 256, 256)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.std() > 1e-3  # not a constant image
    assert not torch.allclose(out[0], out[1])  # different inputs, different outputs


def test_tiny_forward_is_deterministic_and_batch_independent(tiny_model, tiny_outputs):
    images, out = tiny_outputs
    with torch.no_grad():
        alone = tiny_model(images[:1])
    # Random noise (instead of the fixed buffers) or mixing across the batch would move it by ~0.1.
    torch.testing.assert_close(alone, out[:1], rtol=1e-5, atol=1e-5)


def test_training_reaches_the_branches_but_not_the_frozen_generator(tiny_model):
    tiny_model.zero_grad(set_to_none=True)
    tiny_model(_image(1, 32, seed=3)).square().mean().backward()
    fcn = tiny_model.FCN
    # fusion_out[0] and the latent head sit before the whole generator: their gradient crosses it.
    for parameter in (fcn.encoder[0].conv_first.weight, fcn.encoder[-1][3].weight, fcn.fusion_out[0].weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_model.generator.parameters())
    tiny_model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 32, 16), (1, 1, 32, 32), (3, 32, 32)])
def test_an_input_of_the_wrong_shape_is_refused_with_a_clear_error(tiny_model, shape):
    with pytest.raises(ValueError, match=r"expects image \[B,3,32,32\]"):
        tiny_model(torch.zeros(shape))


@pytest.mark.parametrize(("in_size", "out_size"), [(48, 256), (512, 256), (32, 2048), (4, 256)])
def test_unsupported_sizes_are_refused_at_construction(in_size, out_size):
    with pytest.raises(ValueError, match="in_size|out_size"):
        Deghosting(in_size=in_size, out_size=out_size)
