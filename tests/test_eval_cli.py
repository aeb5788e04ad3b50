"""`deghost eval` end to end on generated image pairs: tables, skipped metrics, unpaired files, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg as scipy_linalg

from deghost.runtime.images import write_image
from deghost.training.evaluation import evaluate, weights
from deghost.training.evaluation.metrics import psnr, ssim, to_unit_float
from tests.helpers.eval_cli import read_csv, run_eval
from tests.helpers.metric_weights import accepting, write_all


@pytest.fixture
def folders(tmp_path):
    """outputs/ and references/ with pairs 000–002 (one reference is a .bmp) and one unpaired file on each side."""
    rng = np.random.default_rng(0)
    outputs, references = tmp_path / "outputs", tmp_path / "references"
    arrays = {}
    for index in range(3):
        reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        output = np.clip(reference + rng.integers(-30, 31, reference.shape), 0, 255).astype(np.uint8)
        write_image(outputs / f"{index:03d}.png", output)
        write_image(references / f"{index:03d}.{'bmp' if index == 2 else 'png'}", reference)
        arrays[f"{index:03d}"] = (output, reference)
    write_image(outputs / "only_output.png", arrays["000"][0])
    write_image(references / "only_reference.png", arrays["000"][1])
    return outputs, references, arrays


def test_eval_without_weights_scores_pixels_skips_lpips_and_fid_naming_the_files_and_lists_unpaired(
    folders, tmp_path, capsys
):
    outputs, references, arrays = folders
    assert run_eval("--outputs", outputs, "--references", references, "--out", tmp_path / "results",
                    "--ssim-variant", "gaussian") == 0
    captured = capsys.readouterr()
    assert "LPIPS skipped: supply --lpips-alexnet alexnet-owt-7be5be79.pth" in captured.err
    assert "--lpips-linear alex.pth" in captured.err
    assert "FID skipped: supply --fid-inception pt_inception-2015-12-05-6726825d.pth" in captured.err
    assert "outputs with no reference of the same name (1), not evaluated: only_output.png" in captured.err
    assert "references with no output of the same name (1), not evaluated: only_reference.png" in captured.err
    assert "| all | outputs | 3 |" in captured.out

    per_image = read_csv(tmp_path / "results" / "per_image.csv")
    assert [row["name"] for row in per_image] == ["000", "001", "002"]
    for row in per_image:
        output, reference = (to_unit_float(a) for a in arrays[row["name"]])
        assert float(row["psnr"]) == pytest.approx(psnr(output, reference), abs=1e-12)
        assert float(row["ssim"]) == pytest.approx(ssim(output, reference, "gaussian"), abs=1e-12)
        assert row["lpips"] == ""
    table1 = read_csv(tmp_path / "results" / "table1_metrics.csv")[0]
    assert float(table1["psnr_mean"]) == pytest.approx(np.mean([float(row["psnr"]) for row in per_image]))
    assert table1["lpips_mean"] == "" and read_csv(tmp_path / "results" / "table2_fid.csv")[0]["fid"] == ""
    markdown = (tmp_path / "results" / "metrics.md").read_text()
    assert "SSIM variant gaussian" in markdown and "FID skipped" in markdown


def test_eval_with_all_weight_files_fills_lpips_and_feeds_each_sides_inception_features_to_fid(
    folders, tmp_path, monkeypatch, capsys
):
    outputs, references, arrays = folders
    files = write_all(tmp_path)
    for key, path in files.items():
        monkeypatch.setitem(weights.WEIGHT_FILES, key, accepting(weights.WEIGHT_FILES[key], path))
    # scipy's sqrtm of a 2048² matrix takes over a minute on this CPU; the distance itself is
    # tested against closed forms in test_eval_fid.py, so here the features it receives are checked.
    fid_inputs = []
    monkeypatch.setattr(evaluate, "fid_from_features", lambda *features: fid_inputs.append(features) or 12.5)
    assert run_eval("--outputs", outputs, "--references", references, "--out", tmp_path / "results",
                    "--method", "ours", "--attribute", "Smiling",
                    "--lpips-alexnet", files["lpips_alexnet"], "--lpips-linear", files["lpips_linear"],
                    "--fid-inception", files["fid_inception"]) == 0
    assert "skipped" not in capsys.readouterr().err

    lpips = weights.load_lpips(files["lpips_alexnet"], files["lpips_linear"],
                               weights.WEIGHT_FILES["lpips_alexnet"], weights.WEIGHT_FILES["lpips_linear"])
    for row in read_csv(tmp_path / "results" / "per_image.csv"):
        output, reference = (torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
                             for a in arrays[row["name"]])
        with torch.no_grad():
            assert float(row["lpips"]) == pytest.approx(float(lpips(output, reference)), rel=1e-5)
    inception = weights.load_fid_inception(files["fid_inception"], weights.WEIGHT_FILES["fid_inception"])
    (output_features, reference_features), = fid_inputs
    images = torch.stack([torch.from_numpy(arrays[name][side]).permute(2, 0, 1).float() / 255
                          for side in (0, 1) for name in ("000", "001", "002")])
    with torch.no_grad():
        expected = inception(images).double().numpy()
    np.testing.assert_allclose(np.concatenate([output_features, reference_features]), expected, rtol=1e-4, atol=1e-5)
    fid_row = read_csv(tmp_path / "results" / "table2_fid.csv")[0]
    assert (fid_row["attribute"], fid_row["method"], fid_row["n"], fid_row["fid"]) == ("Smiling", "ours", "3", "12.5")
    assert "FID from 3 pairs" in (tmp_path / "results" / "metrics.md").read_text()


def test_eval_refuses_weight_files_whose_sha256_is_not_the_official_one(folders, tmp_path, capsys):
    outputs, references, _ = folders
    files = write_all(tmp_path)
    assert run_eval("--outputs", outputs, "--references", references, "--out", tmp_path / "results",
                    "--fid-inception", files["fid_inception"]) == 1
    assert "has sha256" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_eval_refuses_pairs_of_different_sizes_and_ambiguous_names(tmp_path, capsys):
    outputs, references = tmp_path / "outputs", tmp_path / "references"
    write_image(outputs / "a.png", np.zeros((32, 32, 3), np.uint8))
    write_image(references / "a.png", np.zeros((32, 40, 3), np.uint8))
    assert run_eval("--outputs", outputs, "--references", references, "--out", tmp_path / "results") == 1
    assert "resize the references" in capsys.readouterr().err
    write_image(references / "a.jpg", np.zeros((32, 32, 3), np.uint8))
    assert run_eval("--outputs", outputs, "--references", references, "--out", tmp_path / "results") == 1
    assert "two images named 'a'" in capsys.readouterr().err


def test_eval_refuses_folders_without_any_pair(tmp_path, capsys):
    write_image(tmp_path / "outputs" / "a.png", np.zeros((32, 32, 3), np.uint8))
    write_image(tmp_path / "references" / "b.png", np.zeros((32, 32, 3), np.uint8))
    assert run_eval("--outputs", tmp_path / "outputs", "--references", tmp_path / "references") == 1
    assert "no image in" in capsys.readouterr().err


class ChannelStatistics(torch.nn.Module):
    """A 4-d stand-in for the FID Inception (same call: RGB [B,3,H,W] in [0,1] → features [B,D]): the mean of
    each channel and the mean of red × green. Not Inception: this checks the path from files to FID."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        red_green = (images[:, 0] * images[:, 1]).mean(dim=(1, 2))
        return torch.cat([images.mean(dim=(2, 3)), red_green[:, None]], dim=1)


def test_eval_gives_the_frechet_distance_of_the_features_of_the_image_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    outputs, references = tmp_path / "outputs", tmp_path / "references"
    pairs = []
    for index in range(8):  # more images than feature dimensions: full-rank covariances
        reference = rng.integers(0, 200, (16, 16, 3), dtype=np.uint8)
        output = np.clip(reference.astype(int) + rng.integers(0, 56, (1, 1, 3)), 0, 255).astype(np.uint8)
        write_image(outputs / f"{index}.png", output)
        write_image(references / f"{index}.png", reference)
        pairs.append((output, reference))
    extractor = tmp_path / "extractor.pth"
    extractor.write_bytes(b"stands in for pt_inception")
    monkeypatch.setattr(weights, "load_fid_inception", lambda path, spec: ChannelStatistics())
    assert run_eval("--outputs", outputs, "--references", references, "--out", tmp_path / "results",
                    "--fid-inception", extractor) == 0

    def features(rgb: np.ndarray) -> np.ndarray:
        unit = rgb.astype(np.float64) / 255
        return np.append(unit.mean(axis=(0, 1)), (unit[..., 0] * unit[..., 1]).mean())

    def statistics(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        stacked = np.stack(rows)
        centred = stacked - stacked.mean(axis=0)
        return stacked.mean(axis=0), centred.T @ centred / (len(rows) - 1)

    (mu1, sigma1), (mu2, sigma2) = (statistics([features(pair[side]) for pair in pairs]) for side in (0, 1))
    by_hand = (mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1 + sigma2 - 2 * scipy_linalg.sqrtm(sigma1 @ sigma2).real)
    fid_row = read_csv(tmp_path / "results" / "table2_fid.csv")[0]
    assert fid_row["n"] == "8"
    assert float(fid_row["fid"]) == pytest.approx(by_hand, rel=1e-4)
    assert by_hand > 1e-3  # the outputs are brighter: a distance, not rounding
