"""FID: the Fréchet distance against closed forms, and the pytorch-fid InceptionV3 layout and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deghost.training.checkpoints import CheckpointError
from deghost.training.evaluation import fid, weights
from deghost.training.evaluation.inception import FIDInceptionV3
from tests.helpers.metric_weights import accepting, write_inception_file


def random_covariance(dim: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((dim, dim))
    return a @ a.T + np.eye(dim)


def test_equal_covariances_leave_the_squared_distance_of_the_means():
    sigma = random_covariance(8, 0)
    mu1, mu2 = np.random.default_rng(1).standard_normal((2, 8))
    assert fid.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)


def test_diagonal_covariances_give_the_sum_of_squared_root_differences():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mu1, mu2 = rng.standard_normal((2, 16))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_a_covariance_scaled_by_c_squared_gives_one_minus_c_squared_times_the_trace():
    sigma, c, mu = random_covariance(12, 3), 0.4, np.zeros(12)
    expected = (1 - c) ** 2 * np.trace(sigma)
    assert fid.frechet_distance(mu, sigma, mu, c**2 * sigma) == pytest.approx(expected, rel=1e-8)


def test_identical_feature_sets_have_fid_zero():
    features = np.random.default_rng(4).standard_normal((64, 16)).astype(np.float32)
    assert abs(fid.fid_from_features(features, features.copy())) < 1e-8


def test_statistics_are_the_mean_and_the_sample_covariance_and_need_two_images():
    features = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = fid.activation_statistics(features)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, [[4.0, 7.0], [7.0, 13.0]])  # N − 1 normaliser
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.activation_statistics(features[:1])


def test_a_non_finite_square_root_is_retried_with_the_eps_offset_on_both_covariances(monkeypatch):
    sigma1, sigma2 = random_covariance(4, 5), random_covariance(4, 6)
    products = []

    def first_call_fails(matrix):
        products.append(matrix)
        return np.full_like(matrix, np.nan) if len(products) == 1 else fid.linalg.sqrtm(matrix)

    monkeypatch.setattr(fid, "_sqrtm", first_call_fails)
    with pytest.warns(UserWarning, match="singular"):
        value = fid.frechet_distance(np.zeros(4), sigma1, np.zeros(4), sigma2, eps=1e-3)
    offset = 1e-3 * np.eye(4)
    np.testing.assert_allclose(products[1], (sigma1 + offset) @ (sigma2 + offset))
    assert np.isfinite(value)


def test_a_square_root_with_a_large_imaginary_diagonal_is_an_error():
    with pytest.raises(ValueError, match="imaginary"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), -np.eye(3))  # sqrt(−I) = i·I


# pytorch-fid's FID Inception = torchvision Inception3(num_classes=1008, aux_logits=False) with patched blocks.
# Every BasicConv2d as (name, in, out, kernel h, kernel w), written out from the official definitions.
def _inception_a(name, cin, pool):
    return [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
            (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", cin, pool, 1, 1)]


def _inception_c(name, c7):
    return [(f"{name}.branch1x1", 768, 192, 1, 1), (f"{name}.branch7x7_1", 768, c7, 1, 1),
            (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
            (f"{name}.branch7x7dbl_1", 768, c7, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_5", c7, 192, 1, 7), (f"{name}.branch_pool", 768, 192, 1, 1)]


def _inception_e(name, cin):
    return [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", cin, 448, 1, 1), (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", cin, 192, 1, 1)]


OFFICIAL_INCEPTION_CONVS = (
    [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
     ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    + _inception_a("Mixed_5b", 192, 32) + _inception_a("Mixed_5c", 256, 64) + _inception_a("Mixed_5d", 288, 64)
    + [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
       ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    + _inception_c("Mixed_6b", 128) + _inception_c("Mixed_6c", 160) + _inception_c("Mixed_6d", 160)
    + _inception_c("Mixed_6e", 192)
    + [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
       ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
       ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    + _inception_e("Mixed_7b", 1280) + _inception_e("Mixed_7c", 2048)
)


def official_inception_layout() -> dict:
    """{key: shape} of `pt_inception-2015-12-05-6726825d.pth`, BatchNorm counters included."""
    entries = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for name, cin, cout, kh, kw in OFFICIAL_INCEPTION_CONVS:
        entries[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            entries[f"{name}.bn.{stat}"] = (cout,)
        entries[f"{name}.bn.num_batches_tracked"] = ()
    return entries


def test_inception_with_the_checked_fc_has_the_official_pytorch_fid_layout():
    model_layout = {key: tuple(value.shape) for key, value in FIDInceptionV3().state_dict().items()}
    assert model_layout | weights.INCEPTION_FC == official_inception_layout()


def test_inception_backbone_has_torchvisions_parameter_count_without_aux_head_and_classifier():
    # torchvision inception_v3 has 27,161,264 parameters (its weights' metadata). Its AuxLogits:
    # conv0 768·128 + bn 2·128, conv1 128·768·25 + bn 2·768, fc 768·1000 + 1000 = 3,326,696; fc 2048·1000 + 1000.
    backbone = 27_161_264 - 3_326_696 - (2048 * 1000 + 1000)
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == backbone == 21_785_568


@pytest.fixture(scope="module")
def inception_file(module_tmp_path):
    return write_inception_file(module_tmp_path / "inception.pth")


def test_inception_forward_on_a_small_batch_gives_2048_features_per_image(inception_file):
    model = weights.load_fid_inception(inception_file, accepting(weights.FID_INCEPTION, inception_file))
    with torch.inference_mode():
        features = model(torch.rand(3, 3, 40, 56))
    assert features.shape == (3, 2048)
    assert torch.isfinite(features).all() and (features >= 0).all()  # average of ReLU outputs


def test_inception_loads_files_with_or_without_batchnorm_counters(tmp_path, inception_file):
    reference = weights.load_fid_inception(inception_file, accepting(weights.FID_INCEPTION, inception_file))
    old = write_inception_file(tmp_path / "old.pth", batch_counters=False)
    model = weights.load_fid_inception(old, accepting(weights.FID_INCEPTION, old))
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, reference.Mixed_7c.branch_pool.conv.weight)


def test_inception_file_with_another_sha256_or_classifier_is_refused(tmp_path, inception_file):
    with pytest.raises(CheckpointError, match="6726825d0af5f729.*Download it again"):
        weights.load_fid_inception(inception_file)
    thousand_classes = tmp_path / "torchvision_like.pth"
    torch.save({**FIDInceptionV3().state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)},
               thousand_classes)
    with pytest.raises(CheckpointError, match=r"fc.weight: shape \(1000, 2048\), expected \(1008, 2048\)"):
        weights.load_fid_inception(thousand_classes, accepting(weights.FID_INCEPTION, thousand_classes))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_fid_of_two_tiny_feature_sets_matches_a_hand_computation():
    features1 = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 1.0], [2.0, 2.0, 0.0], [4.0, 0.0, 1.0]])
    features2 = np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 2.0], [0.0, 4.0, 3.0], [2.0, 2.0, 5.0], [1.0, 0.0, 0.0]])

    def statistics(rows):
        mean = sum(rows) / len(rows)
        covariance = sum(np.outer(row - mean, row - mean) for row in rows) / (len(rows) - 1)
        return mean, covariance

    (mu1, s1), (mu2, s2) = statistics(list(features1)), statistics(list(features2))
    # tr((Σ₁Σ₂)^½) = tr((Σ₁^½ Σ₂ Σ₁^½)^½): the same eigenvalues, from a symmetric matrix (eigh, not sqrtm).
    root1 = _symmetric_sqrt(s1)
    trace_covmean = np.trace(_symmetric_sqrt(root1 @ s2 @ root1))
    by_hand = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * trace_covmean)
    assert fid.fid_from_features(features1, features2) == pytest.approx(by_hand, rel=1e-9)
    assert by_hand > 0
