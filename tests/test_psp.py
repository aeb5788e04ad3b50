"""pSp GradualStyleEncoder against the official implementation's reference outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deghost.training.models.psp import PSPEncoder, add_latent_avg
from deghost.training.models.zoo import build
from tests.helpers.psp_layout import tiny_layout
from tests.helpers.reference import load_reference


@pytest.fixture(scope="module")
def reference():
    return load_reference("psp_encoder")


@pytest.fixture(scope="module")
def state(reference):
    return reference.state_dict()


@pytest.fixture(scope="module")
def encoder(state):
    model = PSPEncoder(num_layers=50, mode="ir_se", n_styles=18)
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_psp_encoder_state_dict_layout_equals_official_checkpoint(encoder, reference):
    layout = {key: (tuple(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in
              encoder.state_dict().items()}
    assert list(layout) == [key for key, _, _ in reference.entries]
    assert layout == reference.layout()


def test_psp_encoder_parameter_count_is_the_official_267136704(encoder, reference):
    count = sum(p.numel() for p in encoder.parameters())
    assert count == reference.manifest["total_params"] == 267_136_704


def test_psp_encoder_matches_official_reference_codes(encoder, reference):
    with torch.no_grad():
        codes = encoder(torch.from_numpy(reference.io["x"]))
    assert codes.shape == (1, 18, 512)
    np.testing.assert_allclose(codes.numpy(), reference.io["codes"], atol=1e-4, rtol=1e-5)


def test_psp_encoder_with_14_styles_gives_the_first_14_official_codes(reference, state):
    # Same trunk, FPN and style blocks 0-13: the coarse/middle/fine split must be the official one.
    model = PSPEncoder(n_styles=14)
    dropped = tuple(f"styles.{i}." for i in range(14, 18))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(dropped)}, strict=True)
    with torch.no_grad():
        codes = model.eval()(torch.from_numpy(reference.io["x"]))
    assert codes.shape == (1, 14, 512)
    np.testing.assert_allclose(codes.numpy(), reference.io["codes"][:, :14], atol=1e-4, rtol=1e-5)


def test_the_tiny_preset_encoder_has_psps_keys_at_a_quarter_of_the_channels(reference):
    # Same layers and names as psp_ffhq_encode.pt, so load_psp and the exported graph take the same code path.
    model = build("encoder", "tiny", seed=0)
    layout = {key: (tuple(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in
              model.state_dict().items()}
    assert layout == tiny_layout(reference.layout())
    assert sum(p.numel() for p in model.parameters()) < 267_136_704 / 16  # the files a tiny test writes stay small
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 256, 256)).shape == (2, 14, 512)


@pytest.mark.parametrize("shape", [(1, 3, 256, 128), (1, 3, 128, 128), (1, 1, 256, 256)])
def test_psp_encoder_refuses_inputs_other_than_256_square_with_a_clear_message(encoder, shape):
    with pytest.raises(AssertionError, match=r"must be \[B,3,256,256\]"):
        encoder(torch.zeros(shape))


def test_add_latent_avg_adds_the_average_to_every_sample():
    torch.manual_seed(0)
    codes, latent_avg = torch.randn(2, 14, 512), torch.randn(14, 512)
    w = add_latent_avg(codes, latent_avg)
    torch.testing.assert_close(w[1] - codes[1], latent_avg)
    with pytest.raises(AssertionError, match="latent_avg"):
        add_latent_avg(codes, torch.randn(18, 512))


@pytest.mark.parametrize("num_layers, mode", [(100, "ir"), (152, "ir_se")])
def test_deeper_ir_trunks_tap_their_stage_ends_and_give_codes_of_the_right_shape(num_layers, mode):
    # Shapes only (meta tensors): the FPN taps must sit where the 128/256/512-channel stages end.
    with torch.device("meta"):
        model = PSPEncoder(num_layers, mode).eval()
        codes = model(torch.empty(2, 3, 256, 256))
    assert codes.shape == (2, 18, 512)
    assert [model.body[i].res_layer[1].out_channels for i in model.taps] == [128, 256, 512]
    assert [model.body[i + 1].res_layer[1].out_channels for i in model.taps[:2]] == [256, 512]
    assert any(".fc1." in key for key in model.state_dict()) == (mode == "ir_se")
