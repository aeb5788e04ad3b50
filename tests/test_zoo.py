"""The model zoo builds every network at the paper's size with the paper's parameter counts."""

from __future__ import annotations

import itertools

import pytest
import torch

from deghost.apps.cli import main
from deghost.presets import get_preset
from deghost.training.models.zoo import BUILDERS, build, count_parameters, example_inputs


def vgg16_features_parameters() -> int:
    """torchvision's vgg16().features: configuration D of Simonyan & Zisserman (2015), thirteen 3×3
    convolutions with bias; counted here from the channel list, not from any model."""
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    return sum(9 * c_in * c_out + c_out for c_in, c_out in itertools.pairwise(channels))


# Learnable parameters at the paper's configuration (ffhq1024), written here, not read from zoo.py.
PAPERS = {
    "suppressor": 26_285_115,  # the paper (MAResU-Net, the proposed suppressor)
    "deghosting": 174_196_615,  # the paper (EOGI's ghosting-suppression network, Song et al. ECCV 2022)
    "encoder": 267_136_704,  # DESIGN.md §2 (pSp GradualStyleEncoder(50, ir_se), psp_ffhq_encode.pt)
    "generator": 30_370_060,  # DESIGN.md §2 (StyleGAN2 Generator(1024, 512, 8, 2), config F)
    "discriminator": 29_012_513,  # DESIGN.md §2 (StyleGAN2 Discriminator(1024, 2))
    "diffcam": 42_534_993,  # DESIGN.md §2 (EOGI DiffCam(17), diff_cam_weight.pt)
    "face_parser": 13_300_416,  # DESIGN.md §2 (BiSeNet(19), 79999_iter.pth)
    "vgg16": vgg16_features_parameters(),  # DESIGN.md gives none: counted above from VGG-16's configuration
}


def test_every_network_of_the_zoo_has_a_figure_here():
    assert set(PAPERS) == set(BUILDERS)


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_paper_configuration_has_the_papers_parameter_count(name):
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        model = BUILDERS[name](get_preset("ffhq1024"))
    assert count_parameters(model) == PAPERS[name]


def test_eogi_has_143_826_555_trainable_parameters_beside_its_frozen_generator():
    """DESIGN.md §2: 174,196,615 = 143,826,555 trainable + the frozen 30,370,060 StyleGAN2 generator."""
    with torch.device("meta"):
        model = BUILDERS["deghosting"](get_preset("ffhq1024"))
    assert count_parameters(model, trainable_only=True) == 143_826_555
    assert count_parameters(model) - count_parameters(model, trainable_only=True) == PAPERS["generator"]


def test_seeded_builds_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = build("suppressor", "tiny", seed=5).state_dict()
    second = build("suppressor", "tiny", seed=5).state_dict()
    other = build("suppressor", "tiny", seed=6).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["firstconv.weight"], other["firstconv.weight"])


@pytest.mark.parametrize("name", ["generator", "diffcam", "face_parser", "suppressor"])
def test_tiny_networks_run_on_their_example_inputs(name):
    model = build(name, "tiny", seed=0)
    with torch.no_grad():
        out = model(*example_inputs(name, "tiny", batch=2))
    first = out[0] if isinstance(out, tuple) else out
    assert first.shape[0] == 2 and torch.isfinite(first).all()


def test_unknown_network_and_preset_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of encoder"):
        build("unet", "tiny")
    with pytest.raises(ValueError, match="ffhq1024, tiny"):
        build("suppressor", "huge")


def test_zoo_command_reports_counts_and_exits_zero(capsys):
    assert main(["zoo", "--preset", "ffhq1024", "--networks", "diffcam", "--repeats", "1", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "untrained" in out
    assert "42,534,993" in out and "MISMATCH" not in out
