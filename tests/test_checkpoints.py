"""Official checkpoint files, saved in their real layouts from the reference state_dicts, load strictly."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from deghost.runtime.directions import DirectionError, load_direction
from deghost.training import checkpoints
from deghost.training.checkpoints import CheckpointError
from deghost.training.models.vgg import VGG16Features
from tests.helpers.reference import load_reference


def save_as_if_from_cuda(obj, path: Path) -> Path:
    """torch.save with every storage tagged 'cuda:0', as files saved on a GPU machine are."""
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(obj, path)
    finally:
        torch.serialization.location_tag = original
    return path


def assert_reference_image(generator, ref):
    with torch.no_grad():
        image = generator.synthesis(torch.from_numpy(ref.io["wplus"]))
    np.testing.assert_allclose(image.numpy(), ref.io["img"], atol=3e-4, rtol=1e-4)


def test_cuda_tagged_file_is_recognised_as_cuda_saved(tmp_path):
    path = save_as_if_from_cuda({"w": torch.ones(2)}, tmp_path / "cuda.pt")
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)  # without map_location it needs a GPU
    assert torch.equal(checkpoints.load_file(path)["w"], torch.ones(2))


def test_rosinality_stylegan2_checkpoint_loads_generator_discriminator_and_args(tmp_path):
    g_ref, d_ref = load_reference("stylegan2_g256"), load_reference("stylegan2_d256")
    content = {
        "g_ema": g_ref.state_dict(),
        "d": d_ref.state_dict(),
        "latent_avg": torch.full((512,), 0.5),
        "args": argparse.Namespace(size=256, channel_multiplier=2),  # rosinality training checkpoints
    }
    loaded = checkpoints.load_stylegan2(save_as_if_from_cuda(content, tmp_path / "sg2.pt"), size=256)
    assert_reference_image(loaded.generator, g_ref)
    with torch.no_grad():
        scores = loaded.discriminator(torch.from_numpy(d_ref.io["x"]))
    np.testing.assert_allclose(scores.numpy(), d_ref.io["out"], atol=2e-5, rtol=1e-5)
    assert torch.equal(loaded.latent_avg, torch.full((512,), 0.5))


def test_stylegan2_checkpoint_without_fixed_buffers_regenerates_them_with_a_warning(tmp_path):
    ref = load_reference("stylegan2_g256")
    full = ref.state_dict()
    stripped = {k: v for k, v in full.items() if not (k.startswith("noises.") or k.endswith("kernel"))}
    assert len(stripped) < len(full)
    torch.save({"g_ema": stripped}, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="fixed buffers"):
        generator = checkpoints.load_stylegan2(tmp_path / "old.pt", size=256).generator
    restored = generator.state_dict()
    for key in full:
        if key.endswith("kernel"):
            assert torch.equal(restored[key], full[key]), key  # FIR kernels are exact constants


def test_checkpoint_with_a_renamed_key_is_refused_naming_both_keys(tmp_path):
    state = load_reference("maresunet").state_dict()
    state["first_conv.weight"] = state.pop("firstconv.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as error:
        checkpoints.load_maresunet(tmp_path / "bad.pt")
    assert "missing key firstconv.weight" in str(error.value)
    assert "unexpected key first_conv.weight" in str(error.value)


def test_checkpoint_with_a_wrong_shape_is_refused_naming_the_shapes(tmp_path):
    state = load_reference("maresunet").state_dict()
    state["firstconv.weight"] = torch.zeros(64, 3, 7, 7)  # a 3-channel first conv instead of 6
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"firstconv.weight: shape \(64, 3, 7, 7\), expected \(64, 6, 7, 7\)"):
        checkpoints.load_maresunet(tmp_path / "bad.pt")


class _Payload:
    """Unpickling this would create a file: proof that code in a checkpoint runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_carrying_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "payload": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as refused:
        checkpoints.load_file(tmp_path / "evil.pt")
    assert not marker.exists()
    message = str(refused.value)
    # What was found (the class whose pickle would run code) and what to do with a trusted file...
    # Path.touch pickles as getattr(Path, "touch"): getattr is the first global the unpickler meets.
    assert "pickles Python objects besides tensors (getattr)" in message
    assert "torch.save(model.state_dict()" in message
    # ...and not PyTorch's advice to load it with weights_only=False, which would run the payload.
    assert "weights_only" not in message and "False" not in message


def test_missing_and_truncated_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.load_file(tmp_path / "nowhere.pt")
    torch.save(load_reference("maresunet").state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:10_000])
    with pytest.raises(CheckpointError, match="cannot load .*cut.pt: it is not a readable PyTorch file") as refused:
        checkpoints.load_file(tmp_path / "cut.pt")
    assert "weights_only" not in str(refused.value)


def test_maresunet_training_checkpoint_loads_from_its_model_entry(tmp_path):
    ref = load_reference("maresunet")
    torch.save({"model": ref.state_dict(), "step": 10}, tmp_path / "suppressor.pt")
    model = checkpoints.load_maresunet(tmp_path / "suppressor.pt")
    with torch.no_grad():
        out = model(torch.from_numpy(ref.io["x"]))
    np.testing.assert_allclose(out.numpy(), ref.io["out"], atol=3e-5, rtol=1e-5)


def test_diffcam_weight_file_loads_and_reproduces_reference_logits(tmp_path):
    ref = load_reference("eogi_diffcam")
    model = checkpoints.load_diffcam(save_as_if_from_cuda(ref.state_dict(), tmp_path / "diff_cam_weight.pt"))
    with torch.no_grad():
        logits = model(torch.from_numpy(ref.io["recon"]), torch.from_numpy(ref.io["edit"]))
    np.testing.assert_allclose(logits.numpy(), ref.io["logits"], atol=1e-4, rtol=1e-5)


def test_bisenet_79999_iter_loads_and_reproduces_reference_labels(tmp_path):
    ref = load_reference("bisenet")
    model = checkpoints.load_bisenet(save_as_if_from_cuda(ref.state_dict(), tmp_path / "79999_iter.pth"))
    with torch.no_grad():
        labels = model(torch.from_numpy(ref.io["x"]))[0].argmax(1)
    assert (labels.numpy() != ref.io["labels"]).mean() <= 5e-4


def test_psp_file_loads_encoder_decoder_and_latent_avg(tmp_path):
    ref = load_reference("psp_encoder")
    encoder_state = ref.state_dict()
    decoder_state = checkpoints.Generator(1024).state_dict()
    latent_avg = torch.randn(18, 512)
    content = {
        "state_dict": {**{f"encoder.{k}": v for k, v in encoder_state.items()},
                       **{f"decoder.{k}": v for k, v in decoder_state.items()}},
        "latent_avg": latent_avg,
        "opts": {"encoder_type": "GradualStyleEncoder", "output_size": 1024},
    }
    del encoder_state, decoder_state
    loaded = checkpoints.load_psp(save_as_if_from_cuda(content, tmp_path / "psp_ffhq_encode.pt"))
    del content
    with torch.no_grad():
        codes = loaded.encoder(torch.from_numpy(ref.io["x"]))
    np.testing.assert_allclose(codes.numpy(), ref.io["codes"], atol=1e-4, rtol=1e-5)
    assert torch.equal(loaded.latent_avg, latent_avg)
    assert loaded.generator.n_latent == 18


def test_psp_file_with_a_latent_avg_of_the_wrong_size_is_refused(tmp_path):
    torch.save({"state_dict": {}, "latent_avg": torch.zeros(14, 512)}, tmp_path / "psp.pt")
    with pytest.raises(CheckpointError, match=r"latent_avg has shape \(14, 512\)"):
        checkpoints.load_psp(tmp_path / "psp.pt")


def test_eogi_deghosting_file_with_mmgen_keys_loads_strictly(tmp_path):
    official = load_reference("eogi_deghosting").state_dict(seed=3)
    model = checkpoints.load_deghosting(save_as_if_from_cuda(official, tmp_path / "deghosting.pt"))
    loaded = model.state_dict()
    # A non-generator weight and a generator weight (renamed from mmgen) keep their values.
    assert torch.equal(loaded["FCN.encoder.0.conv_first.weight"], official["FCN.encoder.0.conv_first.weight"])
    assert torch.equal(loaded["generator.input.input"], official["generator.constant_input.input"])


def test_torchvision_vgg16_file_loads_features_and_ignores_the_classifier(tmp_path):
    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}
    classifier = {"classifier.6.weight": torch.zeros(1000, 4096), "classifier.6.bias": torch.zeros(1000)}
    torch.save({**features, **classifier}, tmp_path / "vgg16-397923af.pth")
    model = checkpoints.load_vgg16_features(tmp_path / "vgg16-397923af.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in features.items())
    torch.save(classifier, tmp_path / "not_vgg.pth")
    with pytest.raises(CheckpointError, match="no features"):
        checkpoints.load_vgg16_features(tmp_path / "not_vgg.pth")


def test_direction_file_is_normalised_over_all_layers(tmp_path):
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(18, 512))
    np.save(tmp_path / "smile.npy", direction)
    unit = load_direction(tmp_path / "smile.npy")
    assert unit.shape == (18, 512) and unit.dtype == np.float32
    np.testing.assert_allclose(unit, direction / np.linalg.norm(direction), rtol=1e-6)
    np.testing.assert_allclose(load_direction(tmp_path / "smile.npy", n_latent=14), unit[:14] / np.linalg.norm(
        unit[:14]), rtol=1e-5)


def test_bad_direction_files_are_refused(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((18, 512)))
    np.save(tmp_path / "short.npy", np.ones((10, 512)))
    with pytest.raises(DirectionError, match="all zeros"):
        load_direction(tmp_path / "flat.npy")
    with pytest.raises(DirectionError, match=r"shape \(10, 512\)"):
        load_direction(tmp_path / "short.npy")
    with pytest.raises(DirectionError, match="does not exist"):
        load_direction(tmp_path / "none.npy")
