"""PSNR, SSIM and MAE on [0,1] images, checked against scikit-image and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from deghost.training.evaluation.metrics import mae, psnr, ssim, to_unit_float
from deghost.training.evaluation.tables import summarize


def random_pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return a, np.clip(a + noise * rng.standard_normal(shape), 0, 1)


@pytest.mark.parametrize("shape", [(64, 64, 3), (45, 71, 3), (7, 9, 3)])
def test_ssim_skimage_variant_matches_scikit_image_default_within_1e6(shape):
    a, b = random_pair(shape, seed=shape[1])
    expected = structural_similarity(a, b, data_range=1, channel_axis=-1)
    assert abs(ssim(a, b, "skimage") - expected) < 1e-6


@pytest.mark.parametrize("shape", [(64, 64, 3), (45, 71, 3), (11, 13, 3)])
def test_ssim_gaussian_variant_matches_wang_et_al_settings_of_scikit_image_within_1e6(shape):
    a, b = random_pair(shape, seed=shape[0])
    expected = structural_similarity(
        a, b, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert abs(ssim(a, b, "gaussian") - expected) < 1e-6


def test_the_two_ssim_variants_give_different_values():
    a, b = random_pair((32, 32, 3))
    assert abs(ssim(a, b, "skimage") - ssim(a, b, "gaussian")) > 1e-3


def test_ssim_of_an_image_with_itself_is_one_and_drops_as_noise_grows():
    a, slightly_noisy = random_pair((32, 32, 3), noise=0.05)
    _, noisier = random_pair((32, 32, 3), noise=0.2)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert 1.0 > ssim(a, slightly_noisy) > ssim(a, noisier)


def test_ssim_refuses_images_smaller_than_its_window_and_unknown_variants():
    a, b = random_pair((9, 9, 3))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a, b, "gaussian")
    with pytest.raises(ValueError, match="unknown SSIM variant"):
        ssim(a, b, "ms-ssim")


def test_psnr_matches_scikit_image_and_the_closed_form_for_a_constant_offset():
    a, b = random_pair((40, 30, 3))
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), abs=1e-9)
    assert psnr(np.zeros((8, 8, 3)), np.full((8, 8, 3), 0.1)) == pytest.approx(20.0, abs=1e-9)  # 10·log10(1/0.01)


def test_psnr_of_identical_images_is_infinite():
    a, _ = random_pair((8, 8, 3))
    assert psnr(a, a.copy()) == math.inf


def test_mae_is_the_mean_absolute_difference():
    a = np.zeros((4, 4, 3))
    b = a.copy()
    b[0, 0, 0], b[1, 1, 2] = 0.5, -0.25
    assert mae(a, b) == pytest.approx(0.75 / 48)
    assert mae(a, b) == mae(b, a)


def test_metrics_refuse_pairs_of_different_shapes_with_the_fix_in_the_message():
    with pytest.raises(ValueError, match="Resize the references"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


def test_uint8_images_map_to_the_unit_interval_and_other_types_are_refused():
    unit = to_unit_float(np.array([[[0, 128, 255]]], dtype=np.uint8))
    np.testing.assert_allclose(unit, [[[0.0, 128 / 255, 1.0]]])
    with pytest.raises(ValueError, match="uint8"):
        to_unit_float(np.zeros((2, 2, 3), dtype=np.float32))


def test_summary_leaves_infinite_psnr_out_of_mean_and_std_and_counts_it():
    summary = summarize([20.0, 30.0, math.inf])
    assert (summary.mean, summary.std, summary.count, summary.infinite) == (25.0, 5.0, 2, 1)
    with pytest.raises(ValueError, match="NaN"):
        summarize([1.0, math.nan])
