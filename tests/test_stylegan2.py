"""StyleGAN2: official reference outputs, exportable ops equal to the reference formulations, latent
helpers, and the mmgen ⇄ rosinality key remapping."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F

from deghost.training.models.stylegan2 import Discriminator, Generator
from deghost.training.models.stylegan2_keys import mmgen_to_rosinality, rosinality_to_mmgen
from deghost.training.models.stylegan2_ops import (
    conv_down_blur_pad,
    conv_up_blur_pad,
    depthwise_fir_weight,
    make_fir_kernel,
    modulated_conv2d,
    upfirdn2d,
    upsample_pad,
)
from tests.helpers.reference import load_reference

GENERATOR_PREFIX = "generator."


# ---------------------------------------------------------------------------------------------------
# Reference formulations, written here only to check the exportable ones against


def upfirdn2d_native(x, kernel, up=1, down=1, pad=(0, 0)):
    """rosinality's upfirdn2d_native: zero insertion, pad/crop, flipped-kernel correlation, subsample."""
    batch, channels, height, width = x.shape
    pad0, pad1 = pad
    out = x.reshape(-1, height, 1, width, 1)
    out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1]).reshape(-1, 1, height * up, width * up)
    out = F.pad(out, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    out = out[
        :, :, max(-pad0, 0) : out.shape[2] - max(-pad1, 0), max(-pad0, 0) : out.shape[3] - max(-pad1, 0)
    ]
    out = F.conv2d(out, torch.flip(kernel, [0, 1])[None, None])
    return out.reshape(batch, channels, *out.shape[2:])[:, :, ::down, ::down]


def grouped_modulated_conv2d(x, weight, styles, demodulate, up, down, blur):
    """rosinality's fused form: per-sample modulated (and demodulated) weights, groups = batch."""
    batch, in_channels, height, width = x.shape
    out_channels, _, k, _ = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # [B,O,I,k,k]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
    if up:
        w = w.transpose(1, 2).reshape(batch * in_channels, out_channels, k, k)
        out = F.conv_transpose2d(x.reshape(1, -1, height, width), w, stride=2, groups=batch)
        return blur(out.reshape(batch, out_channels, *out.shape[2:]))
    if down:
        x = blur(x)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    w = w.reshape(batch * out_channels, in_channels, k, k)
    out = F.conv2d(x, w, stride=2 if down else 1, padding=0 if down else k // 2, groups=batch)
    return out.reshape(batch, out_channels, *out.shape[2:])


# ---------------------------------------------------------------------------------------------------
# Official reference outputs


@pytest.fixture(scope="module")
def g256_reference():
    return load_reference("stylegan2_g256")


@pytest.fixture(scope="module")
def g256(g256_reference):
    generator = Generator(256, style_dim=512, n_mlp=8, channel_multiplier=2).eval()
    generator.load_state_dict(g256_reference.state_dict(), strict=True)
    return generator


def test_generator256_reproduces_official_image_from_wplus(g256, g256_reference):
    with torch.no_grad():
        image = g256.synthesis(torch.from_numpy(g256_reference.io["wplus"]))
    np.testing.assert_allclose(image.numpy(), g256_reference.io["img"], atol=3e-4, rtol=1e-4)


def test_generator256_mapping_reproduces_official_w_from_z(g256, g256_reference):
    with torch.no_grad():
        w = g256.mapping(torch.from_numpy(g256_reference.io["z"]))
    np.testing.assert_allclose(w.numpy(), g256_reference.io["w_from_z"], atol=1e-4, rtol=1e-5)


def test_discriminator256_reproduces_official_logits():
    reference = load_reference("stylegan2_d256")
    discriminator = Discriminator(256, channel_multiplier=2).eval()
    discriminator.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        logits = discriminator(torch.from_numpy(reference.io["x"]))
    assert logits.shape == (4, 1)
    np.testing.assert_allclose(logits.numpy(), reference.io["out"], atol=2e-5, rtol=1e-5)


def test_discriminator_groups_minibatch_stddev_by_interleaving_samples():
    # Batch 8 → groups of 4 formed by samples n, n+2, n+4, n+6: the even samples form one group.
    torch.manual_seed(0)
    discriminator = Discriminator(8).eval()
    four = torch.rand(4, 3, 8, 8) * 2 - 1
    eight = torch.rand(8, 3, 8, 8) * 2 - 1
    eight[0::2] = four
    with torch.no_grad():
        logits_four, logits_eight = discriminator(four), discriminator(eight)
    torch.testing.assert_close(logits_eight[0::2], logits_four, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits_eight[:4], logits_four, atol=1e-3)  # contiguous groups would match


@pytest.mark.parametrize(
    ("network", "size", "expected"),
    [
        (Generator, 1024, 30_370_060),
        (Discriminator, 1024, 29_012_513),
        (Generator, 256, 30_034_338),
        (Discriminator, 256, 28_864_129),
    ],
)
def test_parameter_counts_match_the_official_networks(network, size, expected):
    with torch.device("meta"):  # shapes only: no memory, no random init
        model = network(size)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_parameter_counts_match_the_reference_manifests():
    for name, network in (("stylegan2_g256", Generator), ("stylegan2_d256", Discriminator)):
        with torch.device("meta"):
            model = network(256)
        assert sum(p.numel() for p in model.parameters()) == load_reference(name).manifest["total_params"]


# ---------------------------------------------------------------------------------------------------
# Exportable formulations == reference formulations


@pytest.mark.parametrize(
    ("up", "down", "pad", "gain"),
    [
        (2, 1, upsample_pad(4), 4),  # ToRGB skip upsampling
        (1, 1, conv_up_blur_pad(4, 3), 4),  # blur after the transposed conv
        (1, 2, conv_down_blur_pad(4, 3), 1),  # discriminator 3×3 downsampling
        (1, 2, conv_down_blur_pad(4, 1), 1),  # discriminator 1×1 skip
        (2, 1, (0, -1), 4),  # cropping pads
        (2, 2, (1, 3), 4),
        (3, 1, (2, 0), 9),
    ],
)
def test_depthwise_upfirdn2d_matches_native_reference(up, down, pad, gain):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 6)  # non-square on purpose
    kernel = make_fir_kernel((1, 3, 3, 1), gain=gain)
    kernel = kernel * torch.linspace(0.5, 1.5, 16).reshape(4, 4)  # asymmetric: catches a missing flip
    expected = upfirdn2d_native(x, kernel, up, down, pad)
    got = upfirdn2d(x, depthwise_fir_weight(kernel, 5), up, down, pad)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_fir_kernel_is_normalised_separable_outer_product():
    kernel = make_fir_kernel((1, 3, 3, 1), gain=4)
    torch.testing.assert_close(kernel, torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 16)
    assert kernel.sum().item() == pytest.approx(4.0)


@pytest.mark.parametrize("mode", ["plain", "up", "down"])
@pytest.mark.parametrize("demodulate", [True, False])
def test_shared_weight_modulated_conv2d_matches_grouped_per_sample_weights(mode, demodulate):
    torch.manual_seed(0)
    batch, in_channels, out_channels, k = 3, 8, 6, 3
    x = torch.randn(batch, in_channels, 10, 8)  # non-square; even, as downsampling needs
    weight = torch.randn(out_channels, in_channels, k, k) / (in_channels * k * k) ** 0.5
    styles = 1 + 0.5 * torch.randn(batch, in_channels)
    up, down = mode == "up", mode == "down"
    if up:
        kernel, pad = make_fir_kernel(gain=4), conv_up_blur_pad(4, k)
    else:
        kernel, pad = make_fir_kernel(), conv_down_blur_pad(4, k)

    def blur(t):
        return upfirdn2d_native(t, kernel, pad=pad)

    got = modulated_conv2d(x, weight, styles, demodulate, up=up, down=down, blur=blur)
    expected = grouped_modulated_conv2d(x, weight, styles, demodulate, up, down, blur)
    expected_size = {"plain": (10, 8), "up": (20, 16), "down": (5, 4)}[mode]
    assert got.shape == (batch, out_channels, *expected_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_synthesis_exports_to_onnx_with_shared_conv_weights_and_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    generator = Generator(16).eval()
    path = tmp_path / "generator16.onnx"
    torch.onnx.export(
        generator,
        (torch.randn(2, generator.n_latent, 512),),
        path,
        opset_version=17,
        input_names=["w"],
        output_names=["image"],
        dynamic_axes={"w": {0: "batch"}, "image": {0: "batch"}},
        dynamo=False,
    )
    graph = onnx.load(path).graph
    depends_on_input = {"w"}
    for node in graph.node:  # topological order
        if depends_on_input.intersection(node.input):
            depends_on_input.update(node.output)
    convs = [node for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]
    assert convs and not [node.name for node in convs if node.input[1] in depends_on_input]
    # The blur's zero pads are the convolution's own: a Pad node is an extra pass over the 1024² tensors.
    assert not [node.name for node in graph.node if node.op_type == "Pad"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        w = torch.randn(batch, generator.n_latent, 512)
        with torch.no_grad():
            expected = generator(w).numpy()
        np.testing.assert_allclose(session.run(None, {"w": w.numpy()})[0], expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Latent helpers


def test_truncation_with_psi_one_is_identity_and_psi_zero_returns_w_avg(g256):
    torch.manual_seed(0)
    w_avg = g256.mean_latent(64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(3, g256.n_latent, 512)
    assert w_avg.shape == (1, 512)
    assert torch.equal(Generator.truncate(w, 1.0, w_avg), w)
    assert torch.equal(Generator.truncate(w, 0.0, w_avg), w_avg.expand_as(w))
    torch.testing.assert_close(Generator.truncate(w, 0.7, w_avg), w_avg + 0.7 * (w - w_avg))


def test_mean_latent_is_reproducible_with_a_seeded_torch_generator(g256):
    first = g256.mean_latent(32, generator=torch.Generator().manual_seed(3))
    second = g256.mean_latent(32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_style_mix_takes_layers_below_crossover_from_w1(g256):
    torch.manual_seed(0)
    w1, w2 = torch.randn(2, 512), torch.randn(2, 512)
    wplus = g256.style_mix(w1, w2, crossover=5)
    assert wplus.shape == (2, 14, 512)
    assert torch.equal(wplus[:, :5], w1[:, None].expand(-1, 5, -1))
    assert torch.equal(wplus[:, 5:], w2[:, None].expand(-1, 9, -1))


def test_synthesis_rejects_a_wrong_number_of_latents_with_a_clear_message(g256):
    with pytest.raises(AssertionError, match=r"wplus must be \[B,14,512\]"):
        g256.synthesis(torch.zeros(1, 18, 512))


def test_stages_expose_each_resolution_with_its_noises_and_latent_indices(g256):
    stages = g256.stages()
    assert len(stages) == 6  # 8 … 256
    assert [s.latent_index for s in stages] == [1, 3, 5, 7, 9, 11]
    assert [s.noise.shape[-1] for s in stages] == [8, 16, 32, 64, 128, 256]
    assert stages[-1].to_rgb is g256.to_rgbs[5] and stages[0].up_conv is g256.convs[0]


# ---------------------------------------------------------------------------------------------------
# mmgen (EOGI deghosting.pt) key names


def test_mmgen_generator_layout_remaps_to_generator1024_keys_and_shapes():
    layout = load_reference("eogi_deghosting").layout()
    mmgen = {
        k[len(GENERATOR_PREFIX) :]: shape
        for k, (shape, _) in layout.items()
        if k.startswith(GENERATOR_PREFIX)
    }
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Generator(1024).state_dict().items()}
    assert mmgen_to_rosinality(mmgen) == expected
    assert rosinality_to_mmgen(expected) == mmgen


def test_mmgen_named_reference_weights_load_and_reproduce_the_official_image(g256_reference):
    official = g256_reference.state_dict()
    mmgen_named = rosinality_to_mmgen(official)
    eogi_layout = load_reference("eogi_deghosting").layout()
    # Every mmgen name of the 256 generator exists in EOGI's 1024 generator, with the same shape.
    for key, value in mmgen_named.items():
        assert eogi_layout[GENERATOR_PREFIX + key][0] == tuple(value.shape), key
    restored = mmgen_to_rosinality(mmgen_named)
    assert restored.keys() == official.keys()
    assert all(torch.equal(restored[k], official[k]) for k in official)
    generator = Generator(256).eval()
    generator.load_state_dict(restored, strict=True)
    with torch.no_grad():  # one sample of the two keeps the test fast
        image = generator(torch.from_numpy(g256_reference.io["wplus"][:1]))
    np.testing.assert_allclose(image.numpy(), g256_reference.io["img"][:1], atol=3e-4, rtol=1e-4)


def test_mmgen_remap_renames_only_keys_under_the_prefix():
    tensor = torch.zeros(1)
    state = {"generator.injected_noise_0": tensor, "FCN.conv.weight": tensor}
    assert mmgen_to_rosinality(state, prefix=GENERATOR_PREFIX).keys() == {
        "generator.noises.noise_0",
        "FCN.conv.weight",
    }


def test_mmgen_remap_rejects_keys_that_are_not_generator_keys():
    with pytest.raises(KeyError, match="not a mmgen StyleGAN2 generator key"):
        mmgen_to_rosinality({"FCN.conv.weight": torch.zeros(1)})


# Written by hand from the two codebases' module names (mmgen's StyleGANv2Generator: style_mapping,
# constant_input, injected_noise_*, EqualizedLR's weight_orig, ModulatedConv2d's style_modulation,
# NoiseInjection as noise_injector; rosinality's Generator: style, input, noises, modulation, noise),
# not derived from the project's templates or its inverse.
HAND_WRITTEN_KEY_PAIRS = {
    "style_mapping.1.linear.weight_orig": "style.1.weight",
    "style_mapping.8.bias": "style.8.bias",
    "constant_input.input": "input.input",
    "injected_noise_0": "noises.noise_0",
    "injected_noise_16": "noises.noise_16",
    "conv1.conv.weight_orig": "conv1.conv.weight",
    "conv1.conv.style_modulation.linear.weight_orig": "conv1.conv.modulation.weight",
    "conv1.conv.style_modulation.bias": "conv1.conv.modulation.bias",
    "conv1.noise_injector.weight": "conv1.noise.weight",
    "conv1.activate.bias": "conv1.activate.bias",
    "to_rgb1.bias": "to_rgb1.bias",
    "convs.0.conv.blur.kernel": "convs.0.conv.blur.kernel",
    "convs.15.conv.weight_orig": "convs.15.conv.weight",
    "to_rgbs.7.upsample.kernel": "to_rgbs.7.upsample.kernel",
    "to_rgbs.7.conv.style_modulation.linear.weight_orig": "to_rgbs.7.conv.modulation.weight",
}


def test_mmgen_key_mapping_agrees_with_hand_written_pairs_in_both_directions():
    eogi_layout = load_reference("eogi_deghosting").layout()
    with torch.device("meta"):
        rosinality_keys = set(Generator(1024).state_dict())
    for mmgen, rosinality in HAND_WRITTEN_KEY_PAIRS.items():
        assert GENERATOR_PREFIX + mmgen in eogi_layout, mmgen  # the name EOGI's file really uses
        assert rosinality in rosinality_keys, rosinality  # the name our generator really has
    tensors = {mmgen: torch.zeros(1) for mmgen in HAND_WRITTEN_KEY_PAIRS}
    assert list(mmgen_to_rosinality(tensors)) == list(HAND_WRITTEN_KEY_PAIRS.values())
    back = {rosinality: torch.zeros(1) for rosinality in HAND_WRITTEN_KEY_PAIRS.values()}
    assert list(rosinality_to_mmgen(back)) == list(HAND_WRITTEN_KEY_PAIRS)
