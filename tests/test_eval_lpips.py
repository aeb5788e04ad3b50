"""LPIPS v0.1 (AlexNet): official key layouts, metric properties, strict and sha256-checked loading."""

from __future__ import annotations

import pytest
import torch

from deghost.training.checkpoints import CheckpointError
from deghost.training.evaluation import weights
from deghost.training.evaluation.alexnet import AlexNetFeatures
from deghost.training.evaluation.lpips import LPIPS, normalize_channels
from tests.helpers.metric_weights import accepting, write_alexnet_file, write_lpips_linear_file

# torchvision AlexNet (`alexnet-owt-7be5be79.pth`): features = conv 0, 3, 6, 8, 10; classifier = Linear 1, 4, 6.
OFFICIAL_ALEXNET_LAYOUT = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}
# LPIPS v0.1 `alex.pth`: NetLinLayer(C) = Sequential(Dropout, Conv2d(C, 1, 1, bias=False)) per AlexNet ReLU.
OFFICIAL_LPIPS_LINEAR_LAYOUT = {
    "lin0.model.1.weight": (1, 64, 1, 1),
    "lin1.model.1.weight": (1, 192, 1, 1),
    "lin2.model.1.weight": (1, 384, 1, 1),
    "lin3.model.1.weight": (1, 256, 1, 1),
    "lin4.model.1.weight": (1, 256, 1, 1),
}


def layout(state_dict) -> dict:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    torch.manual_seed(0)
    model = LPIPS().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("lin"):
                parameter.abs_()  # v0.1 linear weights are non-negative
    return model


def test_alexnet_features_plus_the_checked_classifier_make_torchvisions_layout():
    assert layout(AlexNetFeatures().state_dict()) | weights.ALEXNET_CLASSIFIER == OFFICIAL_ALEXNET_LAYOUT


def test_lpips_state_dict_is_the_alexnet_features_under_net_and_the_official_linear_layers():
    expected = {f"net.{k}": v for k, v in OFFICIAL_ALEXNET_LAYOUT.items() if k.startswith("features.")}
    assert layout(LPIPS().state_dict()) == expected | OFFICIAL_LPIPS_LINEAR_LAYOUT


def test_alexnet_taps_have_the_known_relu1_to_relu5_shapes_at_224():
    taps = AlexNetFeatures()(torch.zeros(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in taps] == [(64, 55, 55), (192, 27, 27), (384, 13, 13), (256, 13, 13),
                                                  (256, 13, 13)]


def test_lpips_of_an_image_with_itself_is_zero(lpips_model):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(lpips_model(x, x.clone()), torch.zeros(2))


def test_lpips_is_symmetric_and_positive_for_different_images(lpips_model):
    x, y = torch.rand(2, 3, 64, 80) * 2 - 1, torch.rand(2, 3, 64, 80) * 2 - 1
    with torch.no_grad():
        forward, backward = lpips_model(x, y), lpips_model(y, x)
    torch.testing.assert_close(forward, backward, rtol=1e-6, atol=1e-7)
    assert (forward > 0).all()


def test_lpips_grows_with_the_size_of_the_perturbation(lpips_model):
    torch.manual_seed(3)
    x, noise = torch.rand(1, 3, 64, 64) * 2 - 1, torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        small, large = lpips_model(x, x + 0.05 * noise), lpips_model(x, x + 0.5 * noise)
    assert 0 < small < large


def test_lpips_is_the_weighted_spatial_mean_of_normalised_feature_differences_of_scaled_inputs(lpips_model):
    # The official v0.1 ScalingLayer constants and forward, written out from PerceptualSimilarity.
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    x, y = torch.rand(1, 3, 48, 48) * 2 - 1, torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        taps_x, taps_y = lpips_model.net((x - shift) / scale), lpips_model.net((y - shift) / scale)
        expected = torch.zeros(1)
        for level, (fx, fy) in enumerate(zip(taps_x, taps_y, strict=True)):
            unit_x = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            unit_y = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            weight = getattr(lpips_model, f"lin{level}").model[1].weight.view(1, -1, 1, 1)
            expected += ((unit_x - unit_y) ** 2 * weight).sum(1).mean()
        torch.testing.assert_close(lpips_model(x, y), expected, rtol=1e-5, atol=1e-7)


def test_channel_normalisation_gives_unit_vectors_and_leaves_zero_vectors_at_zero():
    features = torch.tensor([[3.0, 0.0], [4.0, 0.0]]).view(1, 2, 1, 2)  # (h, w) vectors (3, 4) and (0, 0)
    normalised = normalize_channels(features)
    torch.testing.assert_close(normalised[0, :, 0, 0], torch.tensor([0.6, 0.8]))
    assert torch.equal(normalised[0, :, 0, 1], torch.zeros(2))


def test_lpips_loads_both_official_files_strictly_after_checking_their_sha256(tmp_path):
    alexnet, linear = write_alexnet_file(tmp_path / "alexnet.pth"), write_lpips_linear_file(tmp_path / "alex.pth")
    model = weights.load_lpips(alexnet, linear, accepting(weights.LPIPS_ALEXNET, alexnet), weights.LPIPS_LINEAR)
    file_backbone, file_linear = torch.load(alexnet), torch.load(linear)
    assert torch.equal(model.net.features[3].weight, file_backbone["features.3.weight"])
    assert torch.equal(model.lin2.model[1].weight, file_linear["lin2.model.1.weight"])


def test_a_file_whose_sha256_does_not_start_with_the_name_prefix_is_refused(tmp_path):
    alexnet, linear = write_alexnet_file(tmp_path / "alexnet.pth"), write_lpips_linear_file(tmp_path / "alex.pth")
    with pytest.raises(CheckpointError, match="7be5be79.*Download it again"):
        weights.load_lpips(alexnet, linear)  # the official spec: prefix 7be5be79


def test_linear_weights_with_a_missing_layer_or_negative_values_are_refused(tmp_path):
    alexnet = write_alexnet_file(tmp_path / "alexnet.pth")
    spec = accepting(weights.LPIPS_ALEXNET, alexnet)
    linear = torch.load(write_lpips_linear_file(tmp_path / "alex.pth"))
    torch.save({k: v for k, v in linear.items() if k != "lin4.model.1.weight"}, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="missing key lin4.model.1.weight"):
        weights.load_lpips(alexnet, tmp_path / "short.pth", spec)
    torch.save({**linear, "lin0.model.1.weight": -linear["lin0.model.1.weight"]}, tmp_path / "negative.pth")
    with pytest.raises(CheckpointError, match="negative"):
        weights.load_lpips(alexnet, tmp_path / "negative.pth", spec)


def test_an_alexnet_file_without_the_torchvision_classifier_is_refused(tmp_path):
    path = tmp_path / "features_only.pth"
    torch.save(AlexNetFeatures().state_dict(), path)
    with pytest.raises(CheckpointError, match="classifier.1.weight: missing"):
        weights.load_alexnet_features(path, accepting(weights.LPIPS_ALEXNET, path))
