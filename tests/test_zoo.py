"""The model zoo builds every network at the paper's size with the paper's parameter counts."""

from __future__ import annotations

import pytest
import torch

from deghost.apps.cli import main
from deghost.presets import get_preset
from deghost.training.models.zoo import BUILDERS, PAPER_PARAMETERS, build, count_parameters, example_inputs


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_paper_configuration_has_the_papers_parameter_count(name):
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        model = BUILDERS[name](get_preset("ffhq1024"))
    assert count_parameters(model) == PAPER_PARAMETERS[name]


def test_eogi_has_143_826_555_trainable_parameters_beside_its_frozen_generator():
    with torch.device("meta"):
        model = BUILDERS["deghosting"](get_preset("ffhq1024"))
    assert count_parameters(model, trainable_only=True) == 143_826_555
    assert PAPER_PARAMETERS["deghosting"] / PAPER_PARAMETERS["suppressor"] == pytest.approx(6.627, abs=1e-3)


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
