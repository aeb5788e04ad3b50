"""Diff-CAM classifier training with a tiny random generator and encoder (the recipe, not its result)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deghost.runtime.images import read_image, write_image
from deghost.training.checkpoints import load_diffcam
from deghost.training.config import DiffCamConfig
from deghost.training.models.stylegan2 import Generator
from deghost.training.resume import load_checkpoint
from deghost.training.train_diffcam import WEIGHTS_FILE, edit_pairs, train_diffcam

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_networks(seed: int = 0) -> tuple[nn.Module, Generator, torch.Tensor]:
    """An 8² StyleGAN2 generator (4 W+ layers), a linear 'encoder' into its W+, two unit directions."""
    torch.manual_seed(seed)
    generator = Generator(8)
    encoder = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 4 * 512), nn.Unflatten(1, (4, 512)))
    directions = torch.randn(2, 4, 512)
    return encoder, generator, directions / directions.flatten(1).norm(dim=1).view(2, 1, 1)


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
