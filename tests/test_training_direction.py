"""`deghost train direction`: InterFaceGAN's boundary learned from a small generator and classifier built here,
whose class scores are known linear functions of the latent, so the right direction is known in advance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deghost.attributes import EXTRA_ATTRIBUTES, class_names, find_attribute
from deghost.runtime.directions import direction_class, load_direction
from deghost.training.direction.boundary import BoundaryError, chosen_count, project_out, train_boundary
from deghost.training.direction.learn import DirectionJob, Target, direction_array, learn_direction
from deghost.training.direction.samples import CHUNK, SampleSettings, SampleStore, SampleStoreError
from tests.helpers.planted_direction import CLASSES, KEPT, LAYERS, STYLE, TARGET, parts


def unit(vector):
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def learned(module_tmp_path, one_torch_thread):
    """Eyeglasses learned alone and keeping age, from one set of 6400 samples (a quarter each side, as the
    planted scores are noiseless a larger ratio only adds points near the boundary's normal)."""
    sampler, scorer, store, normals = parts(module_tmp_path)
    job = DirectionJob(Target("eyeglasses", TARGET), samples=100 * CHUNK, ratio=0.25, batch_size=64)
    alone = learn_direction(job, sampler, scorer, store, module_tmp_path / "out", "eyeglasses", untrained=True,
                            progress=False, log=lambda _: None)
    keeping = DirectionJob(Target("eyeglasses", TARGET), (Target("age", KEPT),), 100 * CHUNK, 0.25, batch_size=64)
    conditional = learn_direction(keeping, sampler, scorer, store, module_tmp_path / "out", "eyeglasses_keep_age",
                                  untrained=True, progress=False, log=lambda _: None)
    return alone, conditional, normals, sampler, scorer


def test_the_learned_direction_is_the_planted_one(learned):
    alone, _, normals, _, _ = learned
    assert alone.normal @ unit(normals[TARGET]) > 0.95
    assert alone.info["held_out_accuracy"] > 0.99  # noiseless linear scores: the extremes are separable


def test_a_conditional_direction_is_orthogonal_to_the_kept_normal_and_still_moves_its_attribute(learned):
    alone, conditional, normals, sampler, scorer = learned
    kept_normal = conditional.kept_normals["age"]
    assert kept_normal @ unit(normals[KEPT]) > 0.95
    assert abs(conditional.normal @ kept_normal) < 1e-10
    # Edit 64 faces with each direction as the pipeline does (α = 20 on the (18, 512) file, ‖·‖_F = 1).
    w = sampler.wplus(sampler.draw(1000))
    base = scorer(w)

    def change(direction):
        return (scorer(w + 20 * load_direction(direction.path)[None]) - base).mean(0)

    moved_alone, moved_keeping = change(alone), change(conditional)
    # The planted target normal has 0.6 of age's: alone drags age along, keeping it leaves age still.
    assert moved_alone[KEPT] > 0.3 * moved_alone[TARGET] > 0
    assert abs(moved_keeping[KEPT]) < 0.1 * abs(moved_alone[KEPT])
    assert moved_keeping[TARGET] > 0.5 * moved_alone[TARGET]


def test_the_file_has_the_official_form_and_round_trips_through_load_direction(learned):
    alone, conditional, *_ = learned
    array = np.load(alone.path)
    assert array.shape == (18, 512) and array.dtype == np.float64
    assert np.linalg.norm(array) == pytest.approx(1.0)
    # A W direction: the same row on every layer, so w + α·n̂ moves w by α/√18 along the unit normal per layer.
    np.testing.assert_allclose(array, np.tile(alone.normal / np.sqrt(18), (18, 1)), atol=1e-12)
    np.testing.assert_allclose(load_direction(alone.path), array.astype(np.float32), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(load_direction(alone.path, n_latent=14)), 1.0, rtol=1e-6)
    info = json.loads(alone.path.with_suffix(".json").read_text())
    assert (info["attribute"], info["class_index"], info["samples"], info["untrained"]) == ("eyeglasses", 7, 6400, True)
    assert info["per_side"] == {"train": 1120, "held_out": 480}  # 6400·0.25 = 1600 per side, 70 % to train
    assert info["kept"] == [] and conditional.info["kept"][0]["attribute"] == "age"
    assert direction_class(alone.path) == 7


def test_the_entanglement_table_has_a_row_per_class_and_a_column_per_direction(learned):
    _, conditional, *_ = learned
    lines = conditional.table.splitlines()
    assert "untrained" in lines[0]
    assert lines[2] == "| class | eyeglasses (all) | eyeglasses keeping age |"
    rows = lines[4:]
    assert len(rows) == CLASSES and rows[TARGET].startswith("| **eyeglasses (7)** (edited)")
    assert rows[KEPT].startswith("| age (16) |") and rows[0].startswith("| class 0 |")
    changes = conditional.info["entanglement"]["directions"]
    assert abs(changes["eyeglasses keeping age"]["mean"][KEPT]) < abs(changes["eyeglasses (all)"]["mean"][KEPT])


class Counting:
    """A scorer that records the batch sizes it scores and is killed at call `die_at`."""

    kind = "counting"

    def __init__(self, scorer, die_at: int | None = None):
        self.scorer, self.die_at, self.calls = scorer, die_at, []

    def __call__(self, wplus):
        self.calls.append(len(wplus))
        if len(self.calls) == self.die_at:
            raise KeyboardInterrupt
        return self.scorer(wplus)


def test_a_killed_run_resumes_from_its_scored_chunks(tmp_path):
    from deghost.training.direction.samples import collect

    sampler, scorer, store, _ = parts(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # killed while scoring the second chunk's first half
        collect(store, sampler, Counting(scorer, die_at=3), 3 * CHUNK, CHUNK // 2, progress=False)
    assert (store.scored(0), store.scored(1)) == (CHUNK, 0)
    resumed = Counting(scorer)
    latents, scores = collect(store, sampler, resumed, 3 * CHUNK, CHUNK, progress=False)
    assert resumed.calls == [CHUNK, CHUNK]  # chunk 0 was not rendered again
    fresh_latents, fresh_scores = collect(SampleStore(tmp_path / "fresh", store.settings), sampler, scorer, 3 * CHUNK,
                                          CHUNK, progress=False)
    np.testing.assert_array_equal(latents, fresh_latents)  # a sample's latent does not depend on the batch size
    np.testing.assert_allclose(scores, fresh_scores, rtol=1e-5, atol=1e-5)
    # A run that needs fewer samples than a chunk scores only those; a later, larger run completes the chunk.
    small = SampleStore(tmp_path / "small", store.settings)
    collect(small, sampler, scorer, 5, 2, progress=False)
    assert small.scored(0) == 5
    grown = Counting(scorer)
    np.testing.assert_array_equal(collect(small, sampler, grown, CHUNK, CHUNK, progress=False)[0], latents[:CHUNK])
    assert grown.calls == [CHUNK]


def test_samples_made_with_other_settings_are_refused_with_the_fix(tmp_path):
    _, _, store, _ = parts(tmp_path)
    other = SampleSettings("w", 0.7, 0, "planted", "test")
    with pytest.raises(SampleStoreError, match=r"truncation 1\.0 → 0\.7.*another --samples-dir"):
        SampleStore(store.folder, other)


def test_w_plus_samples_mix_two_codes_at_one_layer(tmp_path):
    sampler, *_ = parts(tmp_path, space="wplus")
    latents = sampler.draw(0, 8)
    assert latents.shape == (8, LAYERS, STYLE)
    for face in latents:
        switches = np.flatnonzero(np.any(face[1:] != face[:-1], axis=1))
        assert len(switches) == 1  # the first code up to the crossover, the second after it


def test_interfacegan_selection_and_projection_rules():
    assert chosen_count(10_000, 0.02) == 200 and chosen_count(100, 80) == 50 and chosen_count(100, 7) == 7
    with pytest.raises(BoundaryError, match="give more samples"):
        train_boundary(np.random.default_rng(0).standard_normal((20, 4)), np.arange(20.0), 0.02)
    rng = np.random.default_rng(0)
    primal, a, b = (unit(rng.standard_normal(16)) for _ in range(3))
    # InterFaceGAN's closed form for two conditions (project_boundary), computed independently here.
    ab = a @ b
    alpha = (primal @ a - primal @ b * ab) / (1 - ab**2)
    beta = (primal @ b - primal @ a * ab) / (1 - ab**2)
    np.testing.assert_allclose(project_out(primal, [a, b]), unit(primal - alpha * a - beta * b), atol=1e-12)
    with pytest.raises(BoundaryError, match="keep fewer"):
        project_out(a, [a, b])


def test_the_eogi_releases_other_directions_have_their_classes():
    # HaoruiSong622/Editing-Out-of-Domain image_process.py: direction2idx.
    assert {a.celeba_name: a.class_index for a in EXTRA_ATTRIBUTES.values()} == {
        "Eyeglasses": 7, "Mouth_Open": 10, "Narrow_Eyes": 11}
    assert find_attribute("Old").name == "age" and find_attribute("EYEGLASSES").class_index == 7
    assert find_attribute("freckles") is None
    assert class_names(17)[7] == "eyeglasses" and class_names(17)[0] == "class 0"


def test_direction_array_keeps_a_w_plus_normal_per_layer_and_zero_rows_a_small_generator_lacks():
    normal = unit(np.random.default_rng(0).standard_normal(14 * 512))
    array = direction_array(normal, 14)
    assert array.shape == (18, 512) and not array[14:].any()
    np.testing.assert_allclose(array[:14].ravel(), normal, atol=1e-12)


@pytest.mark.parametrize("arguments, message", [
    (["--attribute", "freckles"], "unknown attribute 'freckles': give one of smile (Smiling)"),
    (["--attribute", "age", "--keep", "Old"], "--keep names age itself"),
    ([], "give --attribute NAME to learn a direction, or --measure NPY"),
])
def test_the_command_names_a_wrong_attribute_in_one_line_before_loading_anything(arguments, message):
    import subprocess
    import sys
    from pathlib import Path

    command = [str(Path(sys.executable).with_name("deghost")), "train", "direction", "--random-init", "0", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
