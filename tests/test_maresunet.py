"""MAResU-Net: official layout and outputs, non-square inputs, attention against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deghost.training.models.maresunet import ChannelAttention, MAResUNet, PositionAttention
from tests.helpers.reference import load_reference


@pytest.fixture(scope="module")
def reference():
    return load_reference("maresunet")


@pytest.fixture(scope="module")
def official_model(reference):
    model = MAResUNet(in_channels=6, out_channels=3).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    return model


def test_maresunet_state_dict_has_the_official_keys_shapes_and_dtypes(reference):
    layout = {key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
              for key, value in MAResUNet().state_dict().items()}
    assert layout == reference.layout()


def test_maresunet_matches_official_reference_output(reference, official_model):
    with torch.no_grad():
        out = official_model(torch.from_numpy(reference.io["x"]))
    np.testing.assert_allclose(out.numpy(), reference.io["out"], rtol=1e-5, atol=3e-5)


def test_maresunet_has_the_paper_parameter_count_and_attention_starts_switched_off():
    model = MAResUNet()
    assert sum(p.numel() for p in model.parameters()) == 26_285_115
    gammas = [p for name, p in model.named_parameters() if name.endswith("gamma")]
    assert len(gammas) == 8 and torch.cat(gammas).eq(0).all()


def test_maresunet_runs_on_non_square_input(official_model):
    torch.manual_seed(0)
    with torch.no_grad():
        out = official_model(torch.rand(2, 6, 64, 96) * 2 - 1)
    assert out.shape == (2, 3, 64, 96)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(100, 100), (96, 100)])
def test_maresunet_rejects_sides_that_are_not_multiples_of_32(official_model, size):
    with pytest.raises(ValueError, match=r"divisible by 32, got \d+x100; pad or resize .* to e\.g\. \d+x128"):
        official_model(torch.zeros(1, 6, *size))


def _switch_on_attention(module: torch.nn.Module, gamma: float) -> None:
    """γ starts at 0 (attention off); set it so the comparison sees the attention term."""
    with torch.no_grad():
        module.gamma.fill_(gamma)


def _position_attention_by_position(pam: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """PAM written per output position: weights 1 + q̂·k̂ over every input position, normalised."""
    def unit(t):
        return t / t.norm(dim=1, keepdim=True)

    query, key, value = unit(pam.query_conv(x)), unit(pam.key_conv(x)), pam.value_conv(x)
    out = torch.empty_like(x)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            similarity = 1 + (query[:, :, i, j, None, None] * key).sum(1)  # [B,H,W]
            normaliser = similarity.sum((1, 2)) + pam.eps * query[:, :, i, j].sum(1)
            out[:, :, i, j] = (similarity[:, None] * value).sum((2, 3)) / normaliser[:, None]
    return x + pam.gamma * out


def test_position_attention_equals_per_position_formulation_on_non_square_input():
    torch.manual_seed(0)
    pam = PositionAttention(16).double()
    _switch_on_attention(pam, 0.7)
    x = torch.randn(2, 16, 4, 7, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(pam(x).numpy(), _position_attention_by_position(pam, x).numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_channel_attention_equals_explicit_softmax_on_non_square_input():
    torch.manual_seed(0)
    cam = ChannelAttention().double()
    _switch_on_attention(cam, 0.7)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64) * 0.3
    energy = torch.einsum("bihw,bjhw->bij", x, x)
    # softmax(max − e) == softmax(−e): the row max only shifts the logits.
    expected = x + 0.7 * torch.einsum("bij,bjhw->bihw", torch.softmax(-energy, -1), x)
    with torch.no_grad():
        np.testing.assert_allclose(cam(x).numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
