"""Diff-CAM classifier training with a tiny random generator and encoder: the recipe's plumbing, that it
learns, bit-exact resume, and DDP equal to one process with the doubled batch."""

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
import torch.nn.functional as F
from torch import nn

from deghost.runtime.images import read_image, write_image
from deghost.training.checkpoints import load_diffcam, load_file
from deghost.training.config import DiffCamConfig
from deghost.training.models.diffcam import DiffCam
from deghost.training.models.stylegan2 import Generator
from deghost.training.resume import load_checkpoint
from deghost.training.train_diffcam import WEIGHTS_FILE, edit_pairs, train_diffcam
from tests.helpers.same_state import assert_same

IMAGES = Path(__file__).parent / "data" / "images"
ASTRONAUT = IMAGES / "astronaut.png"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_networks(seed: int = 0, count: int = 2, max_channels: int = 512) -> tuple[nn.Module, Generator, torch.Tensor]:
    """An 8² StyleGAN2 generator (4 W+ layers), a linear 'encoder' into its W+, `count` unit directions."""
    torch.manual_seed(seed)
    generator = Generator(8, max_channels=max_channels)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 4 * 512), nn.Unflatten(1, (4, 512)))
    directions = torch.randn(count, 4, 512)
    return encoder, generator, directions / directions.flatten(1).norm(dim=1).view(count, 1, 1)


class TinyDiffCam(DiffCam):
    """DiffCam's own forward — fc(avg-pool(classifier(shared(T) − shared(I')))) — on an 8/16-channel trunk with
    BatchNorm instead of ResNet-101 (which takes ~1 s a step on one core)."""

    def __init__(self, n_classes: int, seed: int = 0):
        nn.Module.__init__(self)
        self.n_classes = n_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.shared = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.classifier = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.fc = nn.Linear(16, n_classes)


@pytest.fixture(scope="module")
def photos(module_tmp_path) -> Path:
    """8 crops of the two bundled photos (every other one mirrored), 432–512 px: real image statistics."""
    folder = module_tmp_path / "diffcam_photos"
    folder.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        photo = read_image(IMAGES / name).rgb
        side = min(photo.shape[:2])
        for index in range(4):
            crop = photo[20 * index : 20 * index + side - 40 * index, 10 * index : 10 * index + side - 40 * index]
            write_image(folder / f"{Path(name).stem}_{index}.png", crop[:, ::-1] if index % 2 else crop)
    return folder


def tiny_config(photos: Path, out: Path, **changes) -> DiffCamConfig:
    config = DiffCamConfig(data=str(photos), out=str(out), iterations=4, batch_size=4, encoder_size=16, mask_size=16,
                           lr=1e-3, restart_every=1000, workers=0, checkpoint_every=2, log_every=1)
    return replace(config, **changes)



def test_edit_pairs_render_the_reconstruction_and_the_edit_along_the_drawn_direction():
    encoder, generator, directions = tiny_networks()
    config = DiffCamConfig(alpha=20.0, encoder_size=32, mask_size=16)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    recon, edit = edit_pairs(encoder, generator, directions[[1, 0]], images, config)
    with torch.no_grad():
        w = encoder(F.interpolate(images, size=(32, 32), mode="area"))
        expected_edit = generator(w + 20.0 * directions[[1, 0]])
        expected_recon = generator(w)
    assert recon.shape == edit.shape == (2, 3, 16, 16)
    assert torch.allclose(edit, F.interpolate(expected_edit, size=(16, 16), mode="area"), atol=1e-5)
    assert torch.allclose(recon, F.interpolate(expected_recon, size=(16, 16), mode="area"), atol=1e-5)
    assert not torch.allclose(recon, edit, atol=1e-3)


def test_diffcam_training_restarts_its_cosine_and_writes_weights_that_load_strictly(tmp_path):
    photo = read_image(ASTRONAUT).rgb
    for index in range(4):
        write_image(tmp_path / "faces" / f"{index}.png", photo[index * 64 : index * 64 + 256, :256])
    encoder, generator, directions = tiny_networks()
    config = DiffCamConfig(data=str(tmp_path / "faces"), out=str(tmp_path / "run"), iterations=3, batch_size=2,
                           encoder_size=32, mask_size=32, restart_every=2, workers=0, checkpoint_every=2, log_every=1)
    # EOGI's numbering: the directions are the Smiling (15) and Old (16) classes of a 17-class classifier.
    last = train_diffcam(config, encoder, generator, directions, classes=[15, 16])
    assert last.name == "checkpoint-00000003.pt"
    with open(tmp_path / "run" / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [float(row["lr"]) for row in rows] == pytest.approx([5e-5, 1e-4, 5e-5])  # restart after 2 steps
    assert all(0 <= float(row["accuracy"]) <= 1 and float(row["loss"]) > 0 for row in rows)
    classifier = load_diffcam(tmp_path / "run" / WEIGHTS_FILE, n_classes=17)
    assert torch.equal(classifier.fc.weight, load_checkpoint(last)["model"]["fc.weight"])
    assert all(p.grad is None for p in generator.parameters()), "the generator must stay frozen"


def test_the_classifier_learns_which_direction_was_applied_to_photo_crops(photos, tmp_path):
    """40 steps of batch 4, 3 directions (chance: 1/3), lr 1e-3 for the tiny classifier.

    Measured (2 shared cores, 4 s): loss 1.067 → 0.835 (−22 %), accuracy 0.425 → 0.925 (+0.50), means of
    the first and the last 10 logged steps; asserted at about half of each effect."""
    encoder, generator, directions = tiny_networks(count=3, max_channels=32)
    config = tiny_config(photos, tmp_path, iterations=40, checkpoint_every=40)
    train_diffcam(config, encoder, generator, directions, classifier=TinyDiffCam(3))
    with open(tmp_path / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 40

    def mean(key: str, part: slice) -> float:
        return float(np.mean([float(row[key]) for row in rows[part]]))

    first, last = slice(0, 10), slice(-10, None)
    print(f"\nloss {mean('loss', first):.3f} → {mean('loss', last):.3f}, "
          f"accuracy {mean('accuracy', first):.3f} → {mean('accuracy', last):.3f}")
    assert mean("loss", last) < 0.89 * mean("loss", first)
    assert mean("accuracy", last) > mean("accuracy", first) + 0.25


def test_resumed_training_matches_uninterrupted_training_bit_for_bit(photos, tmp_path):
    config = tiny_config(photos, tmp_path / "straight", restart_every=3)  # a warm restart inside the run
    straight = load_file(train_diffcam(config, *tiny_networks(count=3, max_channels=32), classifier=TinyDiffCam(3)))
    interrupted = replace(config, out=str(tmp_path / "resumed"), stop_at=2)
    assert train_diffcam(interrupted, *tiny_networks(count=3, max_channels=32),
                         classifier=TinyDiffCam(3)).name == "checkpoint-00000002.pt"
    resumed = load_file(train_diffcam(replace(interrupted, stop_at=None, resume="latest"),
                                      *tiny_networks(count=3, max_channels=32), classifier=TinyDiffCam(3)))
    assert straight["step"] == resumed["step"] == 4
    # BatchNorm's running statistics are part of the state: `shared` sees T and I', two updates a step.
    assert straight["model"]["shared.1.num_batches_tracked"] == 8
    for part in ("model", "optimizer", "scheduler", "rng"):
        assert_same(straight[part], resumed[part], part)
    assert_same(load_file(tmp_path / "straight" / WEIGHTS_FILE), load_file(tmp_path / "resumed" / WEIGHTS_FILE))


def _ddp_worker(rank: int, world_size: int, port: int, config: DiffCamConfig) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    train_diffcam(config, *tiny_networks(count=3, max_channels=32), classifier=TinyDiffCam(3))


def test_two_ddp_processes_with_batch_b_equal_one_process_with_batch_2b(photos, tmp_path):
    # BatchNorm normalises by the statistics of the whole global batch, and each image's direction is drawn
    # for its place in the global batch, whichever process holds it. A tiny lr: Adam's first step moves each
    # weight by ±lr whatever its gradient's size, so a gradient that is 0 up to rounding could otherwise flip
    # a weight by 2·lr and make the second step's gradients differ by more than rounding.
    config = tiny_config(photos, tmp_path / "one", iterations=2, batch_size=4, lr=1e-7)
    single = load_file(train_diffcam(config, *tiny_networks(count=3, max_channels=32), classifier=TinyDiffCam(3)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, replace(config, out=str(tmp_path / "two"), batch_size=2)), nprocs=2,
             join=True)
    double = load_file(tmp_path / "two" / "checkpoints" / "checkpoint-00000002.pt")
    assert len(double["rng"]) == 2
    # Measured: the running statistics agree to 2e-7 and Adam's moments to 2e-6 of their largest value;
    # with per-process BatchNorm they differ by up to 0.02 and by up to the largest value itself.
    for name, value in single["model"].items():
        torch.testing.assert_close(double["model"][name], value, rtol=1e-5, atol=1e-6, msg=f"model {name}")
    for index, state in single["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            expected, got = state[moment], double["optimizer"]["state"][index][moment]
            scale = expected.abs().max().item()
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale, msg=f"{moment} of {index}")
