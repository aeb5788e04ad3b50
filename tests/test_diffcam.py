"""EOGI Diff-CAM: official layout and outputs, closed-form CAM against autograd Grad-CAM, mask guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deghost.training.models.diffcam import DiffCam, cam_to_mask
from tests.helpers.reference import load_reference

# (key of the class index in the npz, suffix of its stored maps): Smiling 15, and the mixed-sign class.
CASES = pytest.mark.parametrize(
    ("category", "suffix"), [("target_category", ""), ("alt_target_category", "_alt")], ids=["smiling", "alt"]
)


@pytest.fixture(scope="module")
def reference():
    return load_reference("eogi_diffcam")


@pytest.fixture(scope="module")
def official(reference):
    """The reference-filled model, its inputs and their layer4 features (computed once)."""
    model = DiffCam(17).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    recon, edit = torch.from_numpy(reference.io["recon"]), torch.from_numpy(reference.io["edit"])
    with torch.no_grad():
        features = model.features(recon, edit)
    return model, recon, edit, features


def test_diffcam_state_dict_has_the_official_keys_shapes_and_dtypes(reference):
    layout = {key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
              for key, value in DiffCam(17).state_dict().items()}
    assert layout == reference.layout()


def test_diffcam_has_the_official_parameter_count():
    assert sum(p.numel() for p in DiffCam(17).parameters()) == 42_534_993


def test_diffcam_logits_match_official_reference(reference, official):
    model, recon, edit, _ = official
    with torch.no_grad():
        logits = model(recon, edit)
    np.testing.assert_allclose(logits.numpy(), reference.io["logits"], rtol=1e-5, atol=1e-4)


@CASES
def test_diffcam_raw_map_matches_official_grad_cam_before_relu(reference, official, category, suffix):
    model, _, _, features = official
    class_index = int(reference.io[category])
    with torch.no_grad():
        by_int = model.raw_cam(features, class_index)
        by_tensor = model.raw_cam(features, torch.tensor([class_index]))
    np.testing.assert_allclose(by_int.numpy(), reference.io[f"cam_raw{suffix}"], rtol=0, atol=3e-6)
    torch.testing.assert_close(by_tensor, by_int, rtol=0, atol=0)


def test_official_alt_class_map_has_both_signs(reference):
    # Guards the test above: the alt class must exercise the negative part the ReLU removes.
    raw = reference.io["cam_raw_alt"]
    assert raw.min() < 0 < raw.max()


@CASES
def test_diffcam_mask_matches_official_cam(reference, official, category, suffix):
    model, recon, edit, _ = official
    class_index = int(reference.io[category])
    with torch.no_grad():
        logits, mask = model.cam(recon, edit, class_index)
    assert mask.shape == (1, 1, 256, 256)
    np.testing.assert_allclose(mask[:, 0].numpy(), reference.io[f"cam{suffix}"], rtol=0, atol=3e-4)
    np.testing.assert_allclose(logits.numpy(), reference.io["logits"], rtol=1e-5, atol=1e-4)


def _autograd_grad_cam(model: DiffCam, recon, edit, classes):
    """Grad-CAM the way EOGI's GradCAM computes it: hook layer4, backprop the class scores, average
    the gradients over positions, weight the activations, ReLU, upsample and min-max each image."""
    captured = {}
    hook = model.classifier[-1].register_forward_hook(lambda module, args, output: captured.update(a=output))
    try:
        logits = model(recon, edit)
    finally:
        hook.remove()
    activations = captured["a"]
    (gradients,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), activations)
    raw = (gradients.mean((2, 3), keepdim=True) * activations).sum(1).detach()
    masks = []
    for image_map in raw.clamp(min=0):
        upsampled = F.interpolate(image_map[None, None], size=recon.shape[2:], mode="bilinear")[0, 0]
        upsampled = upsampled - upsampled.min()
        masks.append(upsampled / upsampled.max())
    return logits.detach(), raw, torch.stack(masks)[:, None]


def test_closed_form_cam_equals_autograd_grad_cam_on_random_weights(reference):
    torch.manual_seed(0)
    model = DiffCam(17).eval()
    model.load_state_dict(reference.state_dict(seed=1))
    recon, edit = torch.rand(2, 3, 192, 160) * 2 - 1, torch.rand(2, 3, 192, 160) * 2 - 1
    # One class per sample: 15 (an all-positive map here) and 10 (a map with both signs).
    classes = torch.tensor([15, 10])
    expected_logits, expected_raw, expected_mask = _autograd_grad_cam(model, recon, edit, classes)
    assert expected_raw[0].min() > 0 and expected_raw[1].min() < 0 < expected_raw[1].max()

    with torch.no_grad():
        raw = model.raw_cam(model.features(recon, edit), classes)
        logits, mask = model.cam(recon, edit, classes)
    assert mask.shape == (2, 1, 192, 160)
    torch.testing.assert_close(raw, expected_raw, rtol=0, atol=1e-6)
    torch.testing.assert_close(mask, expected_mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("raw", [torch.zeros(2, 8, 8), -torch.rand(2, 8, 8)], ids=["zero", "negative"])
def test_map_with_nothing_above_zero_gives_a_zero_mask_not_nan(raw):
    mask = cam_to_mask(raw, (256, 256))
    assert mask.shape == (2, 1, 256, 256)
    assert torch.equal(mask, torch.zeros_like(mask))


def test_mask_spans_zero_to_one_per_image():
    torch.manual_seed(0)
    mask = cam_to_mask(torch.randn(3, 8, 8), (64, 32))
    assert mask.shape == (3, 1, 64, 32)
    torch.testing.assert_close(mask.amin((1, 2, 3)), torch.zeros(3))
    torch.testing.assert_close(mask.amax((1, 2, 3)), torch.ones(3))
