"""Suppressor training on tiny synthetic pairs: resume, DDP, divergence stop, logs, checkpoint layout.

Sizes are cut to fit a 2-core CPU: 32–64² images, a width-16 MAResU-Net (same blocks and key names
as the paper's), the StyleGAN2 discriminator at 8², random VGG-16 weights.
"""

from __future__ import annotations

import csv
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from deghost.runtime.images import read_image, write_image
from deghost.training import losses
from deghost.training.checkpoints import load_file, load_maresunet
from deghost.training.config import SuppressorConfig
from deghost.training.data import synthesize_pairs
from deghost.training.loop import TrainingDiverged
from deghost.training.suppressor import check_config, train_suppressor
from deghost.training.synthetic import SyntheticGhosting
from tests.helpers.same_state import assert_same

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"
pytestmark = [
    pytest.mark.filterwarnings("ignore:--random-vgg"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def pairs(module_tmp_path) -> Path:
    """8 synthetic pairs at 64²."""
    root = module_tmp_path / "pairs"
    photo = read_image(ASTRONAUT).rgb
    for index in range(8):
        top, left = 48 * (index % 4), 80 * (index // 4)
        write_image(root / "sources" / f"{index}.png", photo[top : top + 256, left : left + 256])
    synthesize_pairs(root / "sources", root / "data", SyntheticGhosting(), size=64, progress=False)
    return root / "data"


def tiny(pairs: Path, out: Path, **changes) -> SuppressorConfig:
    config = SuppressorConfig(data=str(pairs), out=str(out), iterations=4, batch_size=2, width=16, disc_size=8,
                              crop=32, flip=True, workers=0, checkpoint_every=2, log_every=1, sample_every=2,
                              random_vgg=True)
    return replace(config, **changes)


def final_state(path: Path) -> dict:
    return load_file(path)



def test_resumed_training_matches_uninterrupted_training_bit_for_bit(pairs, tmp_path):
    # Dropout on, crops, flips, R1 and the discriminator: every source of randomness and state.
    config = tiny(pairs, tmp_path / "straight", r1_gamma=1.0, r1_every=2)
    straight = final_state(train_suppressor(config))
    interrupted = replace(config, out=str(tmp_path / "resumed"), stop_at=2)
    assert train_suppressor(interrupted).name == "checkpoint-00000002.pt"
    resumed = final_state(train_suppressor(replace(interrupted, stop_at=None, resume="latest")))
    assert resumed["step"] == straight["step"] == 4
    for part in ("model", "discriminator", "optimizer", "d_optimizer", "scheduler", "d_scheduler", "rng"):
        assert_same(straight[part], resumed[part], part)
    with open(tmp_path / "resumed" / "log.csv") as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [1, 2, 3, 4]


def test_resuming_with_settings_that_change_the_result_is_refused(pairs, tmp_path):
    config = tiny(pairs, tmp_path, adversarial_weight=0.0, iterations=1)
    train_suppressor(config)
    with pytest.raises(ValueError, match="lr: checkpoint has 0.0001, now 0.001"):
        train_suppressor(replace(config, lr=1e-3, iterations=1, resume="latest"))


def test_a_nan_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(pairs, tmp_path, monkeypatch):
    calls = []
    perceptual = losses.PerceptualLoss.forward

    def poisoned(self, output, target):
        calls.append(1)
        value = perceptual(self, output, target)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(losses.PerceptualLoss, "forward", poisoned)
    with pytest.raises(TrainingDiverged) as stopped:
        train_suppressor(tiny(pairs, tmp_path, adversarial_weight=0.0))
    message = str(stopped.value)
    assert "perceptual = nan" in message and "at step 3" in message
    assert str(tmp_path / "checkpoints" / "checkpoint-00000002.pt") in message
    assert not (tmp_path / "checkpoints" / "checkpoint-00000004.pt").exists()


def test_training_writes_a_csv_log_and_sample_grids(pairs, tmp_path):
    last = train_suppressor(tiny(pairs, tmp_path, iterations=2, adversarial_weight=0.0))
    assert "RANDOM VGG-16" in load_file(last)["perceptual_network"]  # a random-VGG run is labelled
    with open(tmp_path / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["step"] for row in rows] == ["1", "2"]
    assert all(float(row["total"]) > 0 for row in rows)
    assert float(rows[1]["lr"]) == pytest.approx(1e-7)  # cosine decay ends at lr_min
    grid = read_image(tmp_path / "samples" / "step-00000002.png").rgb
    assert grid.shape[0] > 2 * 32 and grid.shape[1] >= 4 * 32  # two samples × input | fused | target | output


def test_a_paper_width_checkpoint_exports_and_runs_in_the_runtime(pairs, tmp_path):
    last = train_suppressor(tiny(pairs, tmp_path, width=64, iterations=1, adversarial_weight=0.0))
    model = load_maresunet(last)  # strict: the official-compatible key layout under "model"
    assert sum(p.numel() for p in model.parameters()) == 26_285_115

    from deghost.export.build import BuildOptions, build
    from deghost.runtime.backends import open_backend

    manifest = build(BuildOptions(out=tmp_path / "engines", preset="tiny", stages=["suppressor"], random_init=0,
                                  suppressor=last, onnx_only=True, precision="fp32"), log=lambda _: None)
    artifact = manifest.find("suppressor", "onnx", "fp32")
    assert artifact.source.startswith("sha256:") and not artifact.untrained
    generator = torch.Generator().manual_seed(0)
    image, edit = (torch.rand(1, 3, 256, 256, generator=generator) * 2 - 1 for _ in range(2))
    mask = torch.rand(1, 1, 256, 256, generator=generator)
    outputs = open_backend(manifest, "suppressor", "onnxruntime").run(
        {"image": image.numpy(), "edit": edit.numpy(), "mask": mask.numpy()})
    with torch.no_grad():
        expected = model(torch.cat([image, edit * mask + image * (1 - mask)], 1))
    np.testing.assert_allclose(outputs["output"], expected.numpy(), atol=1e-4, rtol=1e-4)


def test_invalid_settings_are_refused_before_training_with_the_fix():
    with pytest.raises(ValueError) as refused:
        check_config(SuppressorConfig(data="d", crop=48, batch_size=6, disc_size=12))
    message = str(refused.value)
    assert "--crop 48 must be a multiple of 32" in message
    assert "--batch-size 6" in message and "multiple of 4" in message
    assert "--disc-size 12" in message
    assert "--vgg is required" in message and "vgg16-397923af.pth" in message  # the paper's loss needs the file


def _ddp_worker(rank: int, world_size: int, port: int, config: SuppressorConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    train_suppressor(config)


def test_two_ddp_processes_with_batch_b_equal_one_process_with_batch_2b(pairs, tmp_path):
    # frozen_norm: BatchNorm on running statistics and no Dropout. Without it the processes are equal too in
    # exact arithmetic (BatchNorm over the global batch, dropout masks drawn per global sample; see
    # test_training_distributed.py), but this random width-16 network amplifies float32 rounding through
    # BatchNorm in training mode about 10⁵-fold (measured: a 1e-7 relative change of the input moves the
    # gradients by 2.5 %), beyond any float tolerance. The discriminator's minibatch-stddev groups (4
    # interleaved samples) coincide with DistributedSampler's interleaving for per-process batches that are
    # multiples of 4.
    config = tiny(pairs, tmp_path / "one", frozen_norm=True, batch_size=8, iterations=1, r1_gamma=1.0,
                  r1_every=1, sample_every=100)
    single = final_state(train_suppressor(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ddp_config = replace(config, out=str(tmp_path / "two"), batch_size=4)
    mp.spawn(_ddp_worker, args=(2, port, ddp_config), nprocs=2, join=True)
    double = final_state(tmp_path / "two" / "checkpoints" / "checkpoint-00000001.pt")
    assert len(double["rng"]) == 2
    for part in ("optimizer", "d_optimizer"):
        for index, state in single[part]["state"].items():
            # Adam's first moment after one step is 0.1 × the gradient: the averaged gradients must agree.
            gradient, ddp_gradient = state["exp_avg"], double[part]["state"][index]["exp_avg"]
            scale = gradient.abs().max().item()
            assert torch.allclose(gradient, ddp_gradient, rtol=1e-4, atol=1e-6 * scale), f"{part} parameter {index}"
    for part in ("model", "discriminator"):
        for name, value in single[part].items():
            # Adam's first update is lr·sign(gradient): a gradient that is 0 up to rounding may flip its step.
            assert torch.allclose(value, double[part][name], rtol=0, atol=2 * config.lr + 1e-6), f"{part}.{name}"
