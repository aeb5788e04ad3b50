"""Atomic checkpoints and RNG states that survive a weights_only round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from deghost.training.resume import (
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), random.random(), \
        random.gauss(0, 1)


def test_rng_states_restored_from_a_weights_only_checkpoint_repeat_the_same_draws(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    path = save_checkpoint(tmp_path, 5, {"model": {}, "step": 5, "config": {}, "rng": [rng_state()]})
    expected = draws()
    set_rng_state(load_checkpoint(path)["rng"][0])  # load_checkpoint uses weights_only=True
    assert draws() == expected


def test_checkpoints_are_renamed_into_place_and_only_the_newest_are_kept(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000020.pt", "checkpoint-00000030.pt"]
    assert resolve_resume("latest", tmp_path).name == "checkpoint-00000030.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000020.pt", "checkpoint-00000030.pt"]


def test_an_interrupted_write_leaves_no_checkpoint_behind(tmp_path, monkeypatch):
    def interrupted(obj, file):
        file.write(b"half a checkpoint")  # torch.save gets the temporary file's handle
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 1, {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_resume_latest_without_checkpoints_says_how_to_start_fresh(tmp_path):
    with pytest.raises(FileNotFoundError, match="drop --resume"):
        resolve_resume("latest", tmp_path)


def test_a_plain_state_dict_is_not_taken_for_a_training_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="not a deghost training checkpoint"):
        load_checkpoint(tmp_path / "weights.pt")
