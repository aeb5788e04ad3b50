"""The whole chain from face images to engines that edit an image, at toy scale (slow: ~5 CPU minutes).

`deghost train chain --steps 1`: every recipe runs one step, so this checks the plumbing — each
checkpoint loads through the official-layout loaders, the engines build from them, and `deghost edit`
edits an image with them — not the quality of anything trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deghost.apps.cli import build_parser
from deghost.runtime.images import read_image, write_image
from deghost.training import checkpoints
from deghost.training.chain import ChainOptions, run_chain
from deghost.training.models.stylegan2 import Generator

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"


def has_stylegan2_recipe() -> bool:
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    return "stylegan2" in train._subparsers._group_actions[0].choices


@pytest.mark.slow
def test_the_chain_trains_every_network_builds_engines_and_edits_an_image(tmp_path):
    photo = read_image(ASTRONAUT).rgb
    for index in range(4):
        write_image(tmp_path / "faces" / f"{index}.png", photo[index * 64 : index * 64 + 256, 128 : 128 + 256])
    stylegan2 = None
    if not has_stylegan2_recipe():  # the chain then takes a checkpoint made another way
        torch.manual_seed(0)
        generator = Generator(256)
        stylegan2 = tmp_path / "stylegan2.pt"
        torch.save({"g_ema": generator.state_dict(), "latent_avg": generator.mean_latent(1000)[0]}, stylegan2)
    out = tmp_path / "chain"
    edited = run_chain(ChainOptions(images=tmp_path / "faces", out=out, preset="tiny", stylegan2=stylegan2,
                                    steps=1, batch_size=2, samples=4))

    folder = out / "checkpoints"
    if stylegan2 is None:
        stylegan2 = sorted((out / "stylegan2" / "checkpoints").glob("checkpoint-*.pt"))[-1]
    assert checkpoints.load_stylegan2(stylegan2, 256).generator.size == 256
    psp = checkpoints.load_psp(folder / "psp_ffhq_encode.pt", "tiny")
    assert tuple(psp.latent_avg.shape) == (14, 512)
    assert checkpoints.load_diffcam(folder / "diff_cam_weight.pt", 17).n_classes == 17
    checkpoints.load_maresunet(folder / "maresunet.pt")
    outputs = sorted(p for p in edited.rglob("*.png"))
    assert outputs, f"deghost edit wrote nothing into {edited}"
    result = read_image(outputs[0]).rgb
    source = read_image(tmp_path / "faces" / "0.png").rgb
    assert result.shape == source.shape
    assert np.abs(result.astype(int) - source.astype(int)).mean() > 1  # an edit, not a copy
