"""The build: manifest, directions, skip/rebuild on re-run, the command line and its errors."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deghost.export import build as build_module
from deghost.export.build import BuildOptions, build, main
from deghost.export.cli import add_build_command
from deghost.files import sha256_of
from deghost.manifest import Manifest
from deghost.runtime.gpu_platform import fitting_stack
from deghost.stages import STAGE_NAMES
from tests.helpers.cpu_bf16 import bf16_missing

REPO = Path(__file__).resolve().parent.parent
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_manifest_lists_the_graph_of_every_stage_with_its_hash_and_untrained_source(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    assert sorted((a.stage, a.precision) for a in manifest.artifacts) == sorted((s, "fp32") for s in STAGE_NAMES)
    for artifact in manifest.artifacts:
        assert manifest.verify(artifact).name == artifact.file
        assert artifact.kind == "onnx" and artifact.preset == "tiny" and artifact.untrained
        assert artifact.source == "untrained: seed 0"
        assert artifact.inputs[0].shape[0] == "B"


def test_untrained_directions_are_seeded_18x512_float64_files_recorded_in_the_manifest(tiny_onnx_dir):
    manifest = Manifest.load(tiny_onnx_dir)
    assert set(manifest.directions) == {"smile", "age", "beard", "bushy_eyebrows"}
    for record in manifest.directions.values():
        direction = np.load(tiny_onnx_dir / record["file"])
        assert direction.shape == (18, 512) and direction.dtype == np.float64
        assert record["sha256"] == sha256_of(tiny_onnx_dir / record["file"])
        assert record["source"] == "untrained: seed 0"


def test_rerun_skips_unchanged_stages_and_rebuilds_a_changed_seed_or_a_modified_file(tmp_path):
    logged: list[str] = []

    def run(seed: int) -> Manifest:
        logged.clear()
        options = BuildOptions(out=tmp_path, preset="tiny", stages=("face_parser",), precision="fp32",
                               random_init=seed, onnx_only=True)
        return build(options, log=logged.append)

    first = run(0).find("face_parser", "onnx", "fp32")
    assert "face_parser onnx fp32: building (not built yet)" in logged
    again = run(0).find("face_parser", "onnx", "fp32")
    assert "face_parser onnx fp32: unchanged, skipped" in logged
    assert again.sha256 == first.sha256 and again.built == first.built

    changed = run(1).find("face_parser", "onnx", "fp32")
    assert "face_parser onnx fp32: building (source 'untrained: seed 0' → 'untrained: seed 1')" in logged
    assert changed.source == "untrained: seed 1" and changed.sha256 != first.sha256

    with open(tmp_path / "face_parser.onnx", "ab") as handle:
        handle.write(b"\0")
    run(1)
    assert "face_parser onnx fp32: building (its file is missing or was modified)" in logged
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the behaviour without TensorRT")
def test_the_script_with_require_tensorrt_exits_non_zero_and_says_what_to_install(tmp_path):
    # As a script, export/ is first on sys.path: export/tensorrt.py must not pass for the tensorrt package.
    result = subprocess.run([sys.executable, str(REPO / "export" / "build_engines.py"), "--random-init", "0",
                             "--preset", "tiny", "--stages", "face_parser", "--out", str(tmp_path),
                             "--require-tensorrt"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "the tensorrt package is not installed" in result.stderr
    assert f'pip install "deghost[{fitting_stack().extra}]"' in result.stderr  # the extra this driver serves
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the behaviour without TensorRT")
def test_without_tensorrt_the_build_reports_it_and_the_manifest_has_no_engines(tiny_onnx_dir):
    logged: list[str] = []
    options = BuildOptions(out=tiny_onnx_dir, preset="tiny", stages=("face_parser",), precision="fp32",
                           random_init=0)
    manifest = build(options, log=logged.append)
    assert any("TensorRT is not available" in line and f"deghost[{fitting_stack().extra}]" in line for line in logged)
    assert "face_parser onnx fp32: unchanged, skipped" in logged
    assert all(a.kind == "onnx" for a in manifest.artifacts)


def test_a_missing_checkpoints_folder_lists_the_expected_files_and_the_random_init_alternative(tmp_path, capsys):
    code = main(["--checkpoints", str(tmp_path / "nowhere"), "--preset", "tiny", "--out", str(tmp_path / "out"),
                 "--onnx-only"])
    error = capsys.readouterr().err
    assert code == 1
    for expected in ("psp_ffhq_encode.pt", "diff_cam_weight.pt", "79999_iter.pth", "deghosting.pt",
                     "maresunet.pt", "smile.npy", "--random-init SEED"):
        assert expected in error
    assert not (tmp_path / "out").exists()


def test_the_weights_must_be_chosen_explicitly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_module.build_parser().parse_args(["--preset", "tiny"])
    assert exit_info.value.code == 2
    assert "one of the arguments --checkpoints --random-init is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--random-init SEED"):
        BuildOptions(preset="tiny")


def test_the_script_help_teaches_every_option():
    result = subprocess.run([sys.executable, str(REPO / "export" / "build_engines.py"), "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--checkpoints DIR", "--random-init SEED", "UNTRAINED", "--preset", "--stages", "--precision",
                   "--batch MIN:OPT:MAX", "--out DIR", "--onnx-only", "--require-tensorrt", "--workspace-gb"):
        assert option in result.stdout


def test_deghost_build_subcommand_takes_the_same_options():
    parser = argparse.ArgumentParser(prog="deghost")
    add_build_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["build", "--random-init", "3", "--preset", "tiny", "--batch", "1:2:8",
                              "--stages", "suppressor", "--precision", "fp32", "--onnx-only"])
    options = build_module.options_from_args(args)
    assert (options.random_init, options.preset, options.batch, tuple(options.stages)) == (3, "tiny", (1, 2, 8),
                                                                                          ("suppressor",))
    assert callable(args.run)


def test_deghost_export_builds_only_the_validated_onnx_graphs_and_offers_no_tensorrt_options(tmp_path, capsys):
    from deghost.apps.cli import main as deghost_main

    assert deghost_main(["export", "--random-init", "0", "--preset", "tiny", "--stages", "face_parser",
                         "--precision", "fp32", "--out", str(tmp_path)]) == 0
    manifest = Manifest.load(tmp_path)
    assert [(a.stage, a.kind, a.precision) for a in manifest.artifacts] == [("face_parser", "onnx", "fp32")]
    assert "TensorRT is not available" not in capsys.readouterr().out  # nothing was asked of TensorRT
    with pytest.raises(SystemExit) as exit_info:
        deghost_main(["export", "--random-init", "0", "--require-tensorrt"])
    assert exit_info.value.code == 2


def test_directions_under_eogis_own_names_are_accepted_beside_deghosts(tmp_path):
    from deghost.export.sources import write_directions

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    rng = np.random.default_rng(0)
    # EOGI's release names three directions by their CelebA attribute; one file keeps deghost's name.
    given = {"Smiling.npy": "smile", "Old.npy": "age", "Bushy_Eyebrows.npy": "bushy_eyebrows", "beard.npy": "beard"}
    arrays = {}
    for file, attribute in given.items():
        arrays[attribute] = rng.standard_normal((18, 512))
        np.save(checkpoints / file, arrays[attribute])
    records = write_directions(tmp_path / "out", checkpoints)
    assert set(records) == {"smile", "age", "beard", "bushy_eyebrows"}
    for attribute, array in arrays.items():
        assert records[attribute]["file"] == f"directions/{attribute}.npy"
        np.testing.assert_array_equal(np.load(tmp_path / "out" / records[attribute]["file"]), array)

    (checkpoints / "beard.npy").unlink()
    np.save(checkpoints / "Beard.npy", arrays["beard"])
    assert write_directions(tmp_path / "again", checkpoints)["beard"]["sha256"] == records["beard"]["sha256"]


def test_a_missing_direction_is_listed_under_both_accepted_names(tmp_path):
    from deghost.export.sources import SourceError, write_directions

    with pytest.raises(SourceError, match="smile.npy or Smiling.npy, age.npy or Old.npy"):
        write_directions(tmp_path / "out", tmp_path)


def test_without_tensorrt_the_build_writes_fp32_only_says_why_and_records_bf16_accuracy(tmp_path):
    logged: list[str] = []
    manifest = build(BuildOptions(out=tmp_path, preset="tiny", stages=("face_parser",), random_init=0,
                                  onnx_only=True), log=logged.append)
    assert [(a.kind, a.precision) for a in manifest.artifacts] == [("onnx", "fp32")]
    assert not list(tmp_path.glob("*.fp16.onnx"))
    assert any("precision fp32: no TensorRT here" in line and "Built: face_parser onnx fp32" in line
               for line in logged)
    pytest.importorskip("openvino", reason="the bf16 record needs OpenVINO")
    if bf16_missing():  # "bf16" would run in f32 here and read an error of 0: nothing is recorded, and it says why
        assert "openvino_bf16" not in manifest.artifacts[0].validation
        assert any("bf16 error not recorded: this CPU has no bf16 instructions" in line for line in logged)
        return
    record = manifest.artifacts[0].validation["openvino_bf16"]
    assert record["bound"] == 1e-2 and record["within"] == (record["worst"] <= 1e-2)
    assert 0 <= record["errors"]["labels"] <= 1  # a fraction of pixels
