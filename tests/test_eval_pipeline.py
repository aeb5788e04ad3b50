"""`deghost eval --celeba-hq`: the first N faces through the tiny untrained pipeline, every group scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deghost.apps.eval.pipeline_eval import first_images
from deghost.runtime.images import from_model_output, read_image, to_model_input, write_image
from deghost.runtime.pipeline import Pipeline
from deghost.training.evaluation import evaluate, weights
from deghost.training.evaluation.metrics import mae, psnr, ssim, to_unit_float
from tests.helpers.cpu_bf16 import needs_cpu_bf16
from tests.helpers.eval_cli import read_csv, run_eval
from tests.helpers.metric_weights import accepting, write_all

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"


@pytest.fixture(scope="module")
def faces(module_tmp_path):
    """10.png, 2.png, 1.png: the portrait, mirrored, and a darker copy (natural order 1, 2, 10)."""
    face = read_image(ASTRONAUT).rgb
    folder = module_tmp_path / "celeba_hq"
    folder.mkdir()
    variants = {"10": face, "2": np.ascontiguousarray(face[:, ::-1]), "1": (face * 0.7).astype(np.uint8)}
    for name, rgb in variants.items():
        write_image(folder / f"{name}.png", rgb)
    return folder, variants


def test_first_images_follow_natural_name_order_and_skip_other_files(tmp_path):
    for name in ("10.jpg", "2.png", "1.jpg", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in first_images(tmp_path, 2)] == ["1.jpg", "2.png"]
    assert [path.name for path in first_images(tmp_path, 1000)] == ["1.jpg", "2.png", "10.jpg"]


@pytest.fixture
def pipelines_on_the_cpu(monkeypatch):
    """Every Pipeline.load, the CLI's included, on the CPU: scores of two runs are compared at rtol 1e-9, which
    two GPU sessions (cuDNN's algorithm search, TF32) need not reproduce."""
    load = Pipeline.load
    monkeypatch.setattr(Pipeline, "load", staticmethod(lambda *args, **kwargs: load(*args, **kwargs, device="cpu")))


def test_every_attribute_and_method_is_scored_against_the_poisson_target_of_the_same_run(
    faces, tiny_onnx_dir, tmp_path, capsys, pipelines_on_the_cpu
):
    folder, variants = faces
    assert run_eval("--celeba-hq", folder, "--first", 2, "--attributes", "smile,age", "--methods", "network,fused",
                    "--engines", tiny_onnx_dir, "--out", tmp_path / "results") == 0
    assert "| age | fused | 2 |" in capsys.readouterr().out

    rows = read_csv(tmp_path / "results" / "per_image.csv")
    assert [(r["attribute"], r["method"], r["name"]) for r in rows] == [
        (attribute, method, name) for attribute in ("smile", "age") for method in ("network", "fused")
        for name in ("1", "2")
    ]
    with Pipeline.load(tiny_onnx_dir) as pipeline:
        expected = {}
        for name in ("1", "2"):
            modes = ["network", "none", "poisson"]
            result = pipeline.edit([variants[name]], attribute=["smile", "age"], suppress=modes)
            for k, attribute in enumerate(("smile", "age")):
                target = to_unit_float(result.rgb("poisson")[k])
                for method, mode in (("network", "network"), ("fused", "none")):
                    output = to_unit_float(result.rgb(mode)[k])
                    expected[attribute, method, name] = [f(output, target) for f in (psnr, ssim, mae)]
    for row in rows:
        scores = tuple(float(row[metric]) for metric in ("psnr", "ssim", "mae"))
        np.testing.assert_allclose(scores, expected[row["attribute"], row["method"], row["name"]], rtol=1e-9)
    assert len({row["psnr"] for row in rows}) > 1  # the groups differ: nothing was scored against itself

    markdown = (tmp_path / "results" / "metrics.md").read_text()
    assert "UNTRAINED" in markdown and "reference: the Poisson target" in markdown
    assert "2 images edited at 256² with alpha 20" in markdown


def test_original_reference_saves_rescorable_images_leaves_out_corrupt_files_and_fids_against_the_originals(
    faces, tiny_onnx_dir, tmp_path, monkeypatch, capsys
):
    folder, variants = faces
    (folder / "0.png").write_bytes(b"not a png")  # first in natural order
    files = write_all(tmp_path)
    monkeypatch.setitem(weights.WEIGHT_FILES, "fid_inception",
                        accepting(weights.WEIGHT_FILES["fid_inception"], files["fid_inception"]))
    fid_inputs = []  # the distance itself is tested against closed forms in test_eval_fid.py
    monkeypatch.setattr(evaluate, "fid_from_features", lambda *features: fid_inputs.append(features) or 3.25)
    out = tmp_path / "results"
    argv = ["--celeba-hq", folder, "--first", 3, "--attributes", "beard", "--methods", "fused",
            "--reference", "original", "--engines", tiny_onnx_dir, "--out", out, "--save-images",
            "--fid-inception", files["fid_inception"]]
    try:
        assert run_eval(*argv) == 0
    finally:
        (folder / "0.png").unlink()
    err = capsys.readouterr().err
    assert "left out" in err and "0.png" in err
    assert [row["name"] for row in read_csv(out / "per_image.csv")] == ["1", "2"]
    assert read_csv(out / "table2_fid.csv")[0]["fid"] == "3.25"

    saved = out / "images" / "beard"
    for name in ("1", "2"):  # the reference is the input as the models saw it (resized to 256²)
        seen = from_model_output(to_model_input(variants[name], 256)[0])[0]
        np.testing.assert_array_equal(read_image(saved / "reference" / f"{name}.png").rgb, seen)
    (output_features, original_features), = fid_inputs
    models = evaluate.load_metric_models(None, None, files["fid_inception"])
    for side, features in (("fused", output_features), ("reference", original_features)):
        direct = [evaluate.inception_features(models, read_image(saved / side / f"{name}.png").rgb)
                  for name in ("1", "2")]
        np.testing.assert_allclose(features, np.stack(direct), rtol=1e-5, atol=1e-6)

    rescored = tmp_path / "rescored"
    assert run_eval("--outputs", saved / "fused", "--references", saved / "reference", "--out", rescored) == 0
    for first, second in zip(read_csv(out / "per_image.csv"), read_csv(rescored / "per_image.csv"), strict=True):
        assert [first[m] for m in ("psnr", "ssim", "mae")] == [second[m] for m in ("psnr", "ssim", "mae")]

    capsys.readouterr()
    assert run_eval(*argv) == 2  # the tables of the first run are kept
    assert "metrics.md already exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--methods", "poisson"], 1, "compares the target with itself"),
    (["--methods", "ours"], 1, "unknown method(s) ['ours']"),
    (["--attributes", "wings"], 1, "unknown attribute 'wings'"),
    (["--references", "x"], 2, "--references goes with --outputs"),
])
def test_bad_choices_are_refused_with_the_fix_before_any_image_is_edited(
    faces, tiny_onnx_dir, tmp_path, capsys, argv, code, message
):
    folder, _ = faces
    out = tmp_path / "results"
    assert run_eval("--celeba-hq", folder, "--engines", tiny_onnx_dir, "--out", out, *argv) == code
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_outputs_without_references_and_a_missing_face_folder_are_refused(tmp_path, capsys):
    assert run_eval("--outputs", tmp_path, "--out", tmp_path / "r") == 2
    assert "--outputs needs --references" in capsys.readouterr().err
    assert run_eval("--celeba-hq", tmp_path / "missing", "--out", tmp_path / "r") == 1
    assert "does not exist" in capsys.readouterr().err


@needs_cpu_bf16
def test_precision_reaches_the_pipeline_bf16_scores_differ_from_fp32_by_rounding_only(faces, tiny_onnx_dir, tmp_path,
                                                                                    capsys, pipelines_on_the_cpu):
    pytest.importorskip("openvino", reason="bf16 runs on OpenVINO: pip install deghost[openvino]")
    folder, _ = faces
    common = ["--celeba-hq", folder, "--first", 1, "--attributes", "smile", "--methods", "fused",
              "--reference", "original", "--engines", tiny_onnx_dir, "--backend", "openvino"]
    psnr_db = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert run_eval(*common, "--precision", precision, "--out", out) == 0
        psnr_db[precision] = float(read_csv(out / "per_image.csv")[0]["psnr"])
    assert 0 < abs(psnr_db["bf16"] - psnr_db["fp32"]) < 1.0  # bf16 changed the fused face, a little
    capsys.readouterr()
    assert run_eval(*common[:-1], "onnxruntime", "--precision", "bf16", "--out", tmp_path / "refused") == 1
    assert "onnxruntime does not run bf16" in capsys.readouterr().err
