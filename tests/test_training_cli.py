"""`deghost train …` through its argument parser (training.cli; apps/cli.py wires it in)."""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deghost.apps.options import add_backend_options
from deghost.runtime.images import read_image, write_image
from deghost.training.cli import add_train_command, config_from_args
from deghost.training.config import SuppressorConfig
from tests.helpers.cpu_bf16 import needs_cpu_bf16

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="deghost")
    add_train_command(root.add_subparsers(dest="command", required=True), add_backend_options)
    return root


def write_two_faces(folder: Path) -> None:
    """Two overlapping 256² crops of the astronaut photo."""
    photo = read_image(ASTRONAUT).rgb
    for index in range(2):
        write_image(folder / f"{index}.png", photo[index * 100 : index * 100 + 256, :256])


def run(*argv: str) -> int:
    args = parser().parse_args(["train", *argv])
    return args.run(args)


def test_every_config_field_is_an_option_with_the_papers_default():
    args = parser().parse_args(["train", "suppressor", "--data", "pairs"])
    assert config_from_args(args, SuppressorConfig) == SuppressorConfig(data="pairs")
    args = parser().parse_args(["train", "suppressor", "--data", "p", "--resume", "--betas", "0.5", "0.9",
                                "--flip", "--disc-size", "16"])
    config = config_from_args(args, SuppressorConfig)
    assert (config.resume, config.betas, config.flip, config.disc_size) == ("latest", (0.5, 0.9), True, 16)


def default_of(words: str, flag: str) -> str:
    """The '(default: …)' of `flag` in whitespace-normalised --help text: the last one in its entry under options:."""
    options = words[words.index(" options: "):]
    entry = re.search(rf" {re.escape(flag)} [A-Z0-9_]+ (.*?)(?= --[a-z]|$)", options)
    defaults = re.findall(r"\(default: ([^)]*)\)", entry.group(1)) if entry else []
    assert defaults, f"{flag} has no default in the help"
    return defaults[-1]


@pytest.mark.parametrize("command", ["synthesize", "suppressor", "diffcam", "stylegan2", "psp", "chain"])
def test_each_train_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["train", command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    words = " ".join(text.split())
    assert "--out" in text
    if command == "suppressor":
        assert "(default: 200000)" in text and "torchrun" in text
    if command == "stylegan2":  # rosinality's config-F values, named and as defaults
        assert "gamma 10 every 16 D steps" in words and "weight 2 every 4 G steps" in words
        assert "--lr LR Adam learning rate" in words and "(default: 0.002)" in words
        assert "--batch-size BATCH_SIZE" in words and "(default: 16)" in words and "(default: 800000)" in words
    if command == "psp":  # pSp's ffhq_encode values, named and as defaults
        assert "L = 1.0·L2 + 0.8·LPIPS + 0.1·identity" in words and "Ranger lr 1e-4, batch 8, 500k steps" in words
        defaults = {flag: default_of(words, flag) for flag in (
            "--l2-weight", "--lpips-weight", "--id-weight", "--optimizer", "--lr", "--batch-size", "--iterations")}
        assert defaults == {"--l2-weight": "1.0", "--lpips-weight": "0.8", "--id-weight": "0.1",
                            "--optimizer": "ranger", "--lr": "0.0001", "--batch-size": "8", "--iterations": "500000"}
        assert "torchrun" in words
    if command == "diffcam":
        assert "Adam (0.9, 0.99)" in words and default_of(words, "--lr") == "0.0001" and "torchrun" in words
    if command == "chain":  # the steps, in order
        assert ("stylegan2 → samples → psp → directions → diffcam → synthesize → suppressor → export --checkpoints "
                "→ edit") in words
        assert default_of(words, "--steps") == "2"


@needs_cpu_bf16
def test_synthesize_runs_the_pipeline_on_the_backend_and_precision_asked_for(tmp_path, tiny_onnx_dir, capsys):
    """The same two sources through ONNX Runtime fp32 and OpenVINO bf16: the same draws, fused images that
    differ by bf16 rounding only; bf16 on ONNX Runtime is refused (the options reach the pipeline)."""
    from deghost.training.data import read_manifest

    write_two_faces(tmp_path / "faces")
    common = ("synthesize", "--sources", str(tmp_path / "faces"), "--source", "pipeline",
              "--engines", str(tiny_onnx_dir), "--device", "cpu", "--threads", "2")
    assert run(*common, "--out", str(tmp_path / "fp32"), "--backend", "onnxruntime") == 0
    assert run(*common, "--out", str(tmp_path / "bf16"), "--backend", "openvino", "--precision", "bf16") == 0
    fp32, bf16 = (read_manifest(tmp_path / name) for name in ("fp32", "bf16"))
    assert [e["attribute"] for e in fp32] == [e["attribute"] for e in bf16] and len(fp32) == 2
    for a, b in zip(fp32, bf16, strict=True):
        fused_a = read_image(tmp_path / "fp32" / a["fused"]).rgb.astype(int)
        fused_b = read_image(tmp_path / "bf16" / b["fused"]).rgb.astype(int)
        assert 0 < np.abs(fused_a - fused_b).mean() < 2.0  # grey levels: bf16 changed it, a little
    capsys.readouterr()
    assert run(*common, "--out", str(tmp_path / "refused"), "--backend", "onnxruntime", "--precision", "bf16") == 1
    assert "onnxruntime does not run bf16" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:--random-vgg")
def test_synthesize_then_train_from_the_command_line(tmp_path, capsys):
    write_two_faces(tmp_path / "faces")
    (tmp_path / "faces" / "broken.jpg").write_bytes(b"not a jpeg")
    assert run("synthesize", "--sources", str(tmp_path / "faces"), "--out", str(tmp_path / "pairs"),
               "--size", "32") == 0
    assert "2 pairs made, 0 already there, 1 sources skipped" in capsys.readouterr().out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run("suppressor", "--data", str(tmp_path / "pairs"), "--out", str(tmp_path / "run"),
                   "--iterations", "1", "--batch-size", "2", "--width", "16", "--disc-size", "8",
                   "--workers", "0", "--log-every", "1", "--random-vgg") == 0
    finally:
        torch.set_num_threads(threads)
    assert "last checkpoint:" in capsys.readouterr().out
    with open(tmp_path / "run" / "log.csv") as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["1"]


@pytest.mark.filterwarnings("ignore:--random-vgg")
def test_a_disk_that_fills_up_stops_training_with_a_message_not_a_traceback(tmp_path, small_disk, capsys):
    write_two_faces(tmp_path / "faces")
    assert run("synthesize", "--sources", str(tmp_path / "faces"), "--out", str(tmp_path / "pairs"),
               "--size", "32") == 0
    # width 16: ~3 MB of checkpoint (weights and Adam moments) for a 2 MiB disk
    assert run("suppressor", "--data", str(tmp_path / "pairs"), "--out", str(small_disk / "run"),
               "--iterations", "1", "--batch-size", "2", "--width", "16", "--disc-size", "8",
               "--workers", "0", "--random-vgg") == 1
    error = capsys.readouterr().err
    assert error.splitlines()[-1].startswith("deghost train: error: no space left on the disk holding")
    assert "checkpoint-00000001.pt" in error and "Traceback" not in error
    assert not [p for p in (small_disk / "run").rglob("*.pt*")]  # no checkpoint, whole or partial


def test_a_missing_dataset_is_reported_without_a_traceback(tmp_path, capsys):
    assert run("suppressor", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
               "--random-vgg") == 1
    assert "make the dataset first with `deghost train synthesize`" in capsys.readouterr().err
