"""`deghost train stylegan2` at toy scale on crops of the bundled photo: resume, DDP, learning,
bad input, and checkpoints in rosinality's layout (checked against shared/reference).

Toy networks: 16² images, feature channels capped at 32–64 (same blocks and key names as config F).
"""

from __future__ import annotations

import csv
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from deghost.runtime.images import read_image, write_image
from deghost.training.checkpoints import load_file, load_stylegan2
from deghost.training.config import StyleGAN2Config
from deghost.training.data import CheckedImageFolder, DatasetError
from deghost.training.models.stylegan2 import Generator
from deghost.training.train_stylegan2 import train_stylegan2
from tests.helpers.same_state import assert_same

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"
REFERENCE = Path(__file__).parents[2] / "shared" / "reference"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photos(module_tmp_path) -> Path:
    """8 crops of the astronaut photo (100–256 px, so most are resized), plus a broken file."""
    folder = module_tmp_path / "photos"
    folder.mkdir()
    photo = read_image(ASTRONAUT).rgb
    for index in range(8):
        side = 256 - 20 * index
        top, left = 30 * index, 200 - 20 * index
        write_image(folder / f"{index}.png", photo[top : top + side, left : left + side])
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def toy(photos: Path, out: Path, **changes) -> StyleGAN2Config:
    config = StyleGAN2Config(data=str(photos), out=str(out), size=16, max_channels=32, batch_size=4, iterations=4,
                             d_reg_every=2, g_reg_every=2, workers=0, checkpoint_every=2, log_every=1,
                             sample_every=2, latent_avg_samples=256)
    return replace(config, **changes)



def test_resumed_training_matches_uninterrupted_training_bit_for_bit(photos, tmp_path):
    # Adaptive augmentation (p moves every step), mixing, R1 and path length every 2 steps: all state.
    config = toy(photos, tmp_path / "straight", augment=True, ada_every=1, ada_length=100)
    straight = load_file(train_stylegan2(config))
    interrupted = replace(config, out=str(tmp_path / "resumed"), stop_at=2)
    train_stylegan2(interrupted)
    resumed = load_file(train_stylegan2(replace(interrupted, stop_at=None, resume="latest")))
    assert straight["step"] == resumed["step"] == 4
    assert straight["ada_aug_p"] > 0  # the adaptive p did move, so its state was carried over
    for part in ("g", "d", "g_ema", "g_optim", "d_optim", "training_state", "latent_avg", "ada_aug_p", "rng"):
        assert_same(straight[part], resumed[part], part)


def test_checkpoints_have_rosinalitys_entries_and_load_through_the_official_layout_loader(photos, tmp_path):
    # Uncapped channels at 8²: the config-F layout (512 channels up to 32²).
    last = train_stylegan2(toy(photos, tmp_path, size=8, max_channels=512, iterations=1, latent_avg_samples=1000))
    content = load_file(last)
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p", "latent_avg"} <= set(content)
    assert content["args"].size == 8 and content["args"].r1 == 10.0 and content["args"].latent == 512
    loaded = load_stylegan2(last, size=8)  # strict, g_ema and d
    assert loaded.discriminator is not None and loaded.latent_avg.shape == (512,)
    # latent_avg is the mean of g_ema's mapping over latent_avg_samples z drawn from the run's seed (0).
    with torch.no_grad():
        w = loaded.generator.mapping(torch.randn(1000, 512, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(loaded.latent_avg, w.mean(0), rtol=1e-4, atol=1e-5)
    skipped = json.loads((tmp_path / "skipped.json").read_text())
    assert [Path(entry["source"]).name for entry in skipped] == ["broken.jpg"]


@pytest.mark.slow
def test_a_256_checkpoint_matches_the_official_state_dict_layouts(photos, tmp_path):
    last = train_stylegan2(toy(photos, tmp_path, size=256, max_channels=512, batch_size=2, iterations=1,
                               latent_avg_samples=100))
    content = load_file(last)
    for entry, reference in (("g", "stylegan2_g256"), ("g_ema", "stylegan2_g256"), ("d", "stylegan2_d256")):
        manifest = json.loads((REFERENCE / f"{reference}.json").read_text())
        expected = [(key, list(shape), dtype) for key, shape, dtype in manifest["entries"]]
        got = [(key, list(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in
               content[entry].items()]
        assert sorted(got) == sorted(expected), entry


def test_too_few_images_and_an_empty_folder_are_refused_with_the_fix(photos, tmp_path):
    with pytest.raises(ValueError, match="cannot fill one batch of 16"):
        train_stylegan2(toy(photos, tmp_path, batch_size=16))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="no readable images.*1 files could not be read"):
        train_stylegan2(toy(tmp_path / "empty", tmp_path / "run"))


def _ddp_worker(rank: int, world_size: int, port: int, config: StyleGAN2Config) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    train_stylegan2(config)


def test_two_ddp_processes_with_batch_b_equal_one_process_with_batch_2b(photos, tmp_path):
    # Step 0 runs every part: D, R1, G and path length; fixed-p augmentation on all D inputs. A tiny lr:
    # Adam's first step moves every weight by about ±lr whatever its gradient's size, so at 0.002 the
    # rounding-level differences of two summation orders (amplified ~100× by D's minibatch-stddev sqrt)
    # flip some weights by 2·lr before the path-length step, and that step's gradients then differ by ~1 %.
    config = toy(photos, tmp_path / "one", batch_size=8, iterations=1, augment=True, augment_p=0.5,
                 sample_every=100, lr=1e-7)
    single = load_file(train_stylegan2(config))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, replace(config, out=str(tmp_path / "two"), batch_size=4)), nprocs=2,
             join=True)
    double = load_file(tmp_path / "two" / "checkpoints" / "checkpoint-00000001.pt")
    assert len(double["rng"]) == 2
    for part in ("g_optim", "d_optim"):
        for index, state in single[part]["state"].items():
            # Adam's first moment is a sum of (1 − β1)-weighted gradients: the averaged gradients must agree.
            moment, ddp_moment = state["exp_avg"], double[part]["state"][index]["exp_avg"]
            scale = moment.abs().max().item()
            torch.testing.assert_close(moment, ddp_moment, rtol=1e-3, atol=1e-5 * scale + 1e-12,
                                       msg=f"{part} parameter {index}")
    assert single["training_state"]["mean_path_length"] == pytest.approx(
        double["training_state"]["mean_path_length"], rel=1e-5)


def colour_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of [B,3,H,W] images."""
    return images.mean((0, 2, 3)), images.std((0, 2, 3))


def colour_distance(checkpoint: Path, photos: torch.Tensor) -> float:
    """‖Δmean‖ + ‖Δstd‖ between the colours of 64 g_ema samples (fixed latents) and of the photos."""
    generator = Generator(16, max_channels=32)  # the toy networks
    generator.load_state_dict(load_file(checkpoint)["g_ema"])
    z = torch.randn(64, 512, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        samples = generator(generator.to_wplus(generator.mapping(z)))
    (sample_mean, sample_std), (photo_mean, photo_std) = colour_statistics(samples), colour_statistics(photos)
    return float((sample_mean - photo_mean).norm() + (sample_std - photo_std).norm())


@pytest.mark.slow
def test_a_few_dozen_steps_move_the_losses_the_right_way(photos, tmp_path):
    """D learns to tell real from fake and the samples' colour statistics approach the photos'.

    g_ema's half-life is 100 images here (accum 0.97 a step) instead of 10k, so that it follows G within 40 steps;
    nothing else depends on it. Measured (2 shared cores, ~1 min): colour distance of g_ema's samples to the
    photos 1.121 after the first step → 0.365 after 40 (−67 %; G's own samples 1.074 → 0.527); D loss
    1.33 → 0.90, real − fake score 1.26."""
    steps = 40
    config = toy(photos, tmp_path, iterations=steps, checkpoint_every=steps, lr=0.002, sample_every=1000,
                 ema_half_life=100)
    early = train_stylegan2(replace(config, stop_at=1))
    early_distance = colour_distance(early, photos_at_16(photos))
    final_distance = colour_distance(train_stylegan2(replace(config, resume="latest")), photos_at_16(photos))
    with open(tmp_path / "log.csv") as file:
        rows = list(csv.DictReader(file))
    first, final = rows[:5], rows[-10:]

    def mean(rows, key):
        return float(np.mean([float(row[key]) for row in rows]))

    # The discriminator starts at chance (loss 2·ln 2 = 1.386) and separates real from fake.
    gap = mean(final, "real_score") - mean(final, "fake_score")
    print(f"\nD loss {mean(first, 'd'):.3f} → {mean(final, 'd'):.3f}; real − fake score {gap:.2f}; "
          f"colour distance {early_distance:.3f} → {final_distance:.3f}")
    assert mean(final, "d") < np.log(4) - 0.2
    assert gap > 0.6  # measured 1.26 (D loss 1.33 → 0.90) at 40 steps
    assert final_distance < 0.67 * early_distance


def photos_at_16(folder: Path) -> torch.Tensor:
    """The training images as the run sees them (16², before flips, which leave colour statistics alone)."""
    dataset = CheckedImageFolder(folder, 16, progress=False)
    return torch.stack([dataset[index] for index in range(len(dataset))])
