"""A learned direction in use: its JSON names its Diff-CAM class, so `deghost edit`, the demo and the build's
manifest mask the edit with that class, not with the class whose logit the edit happened to change most."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.export.sources import write_directions
from deghost.manifest import DIRECTIONS_FOLDER
from deghost.runtime.images import read_image
from deghost.runtime.pipeline import Pipeline
from deghost.training.direction.learn import DirectionJob, Target, learn_direction
from deghost.training.direction.samples import CHUNK
from tests.helpers.planted_direction import parts
from tests.helpers.tiny_engines import engines_copy, tiny_engines

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"
LEARNED_CLASS = 7
NAME = "glasses_learned"  # a name no attribute has: the class can only come from the JSON


@pytest.fixture(scope="module")
def learned_file(module_tmp_path):
    """A direction learned by `learn_direction` (planted model, 4 chunks), its JSON saying class 7."""
    sampler, scorer, store, _ = parts(module_tmp_path)
    job = DirectionJob(Target("eyeglasses", LEARNED_CLASS), samples=4 * CHUNK, ratio=0.25, batch_size=CHUNK)
    return learn_direction(job, sampler, scorer, store, module_tmp_path / "learned", NAME, untrained=True,
                           progress=False, log=lambda _: None).path


@pytest.fixture(scope="module")
def pipe(request):
    with Pipeline.load(tiny_engines(request), backend="onnxruntime", device="cpu") as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def face(pipe):
    """The astronaut as an aligned crop of the engines' side."""
    side = pipe.preset.image_size
    return cv2.resize(read_image(ASTRONAUT).rgb, (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def expected(pipe, face, learned_file, module_tmp_path):
    """(fused with class 7 given by hand, fused with the class the logits choose): the file without its JSON."""
    bare = module_tmp_path / "bare" / f"{NAME}.npy"
    bare.parent.mkdir()
    shutil.copyfile(learned_file, bare)
    chosen = pipe.edit(face, str(bare), 20.0, "none")
    if int(chosen.class_index[0]) == LEARNED_CLASS:
        pytest.skip("the untrained classifier's largest logit change is class 7 itself: nothing to tell apart")
    by_hand = pipe.edit(face, str(bare), 20.0, "none", class_index=LEARNED_CLASS)
    assert np.abs(by_hand.mask - chosen.mask).max() > 0.05  # the two classes' masks differ
    return by_hand.rgb("none")[0], chosen.rgb("none")[0]


def test_the_pipeline_reads_the_class_from_the_json_beside_the_file(pipe, learned_file):
    assert [e.class_index for e in pipe.edits(str(learned_file), [5.0, -5.0])] == [LEARNED_CLASS] * 2


def test_deghost_edit_masks_a_learned_direction_with_its_own_class(request, learned_file, face, expected, tmp_path):
    source = tmp_path / "face.png"
    cv2.imwrite(str(source), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    command = [str(Path(sys.executable).with_name("deghost")), "edit", str(source), "--aligned", "--attribute",
               str(learned_file), "--alpha", "20", "--suppress", "none", "--out", str(tmp_path / "out"),
               "--engines", str(tiny_engines(request)), "--backend", "onnxruntime", "--device", "cpu", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (written,) = (tmp_path / "out").glob(f"face_{NAME}+20_none.png")
    got = read_image(written).rgb.astype(int)
    by_hand, chosen = (e.astype(int) for e in expected)
    assert np.abs(got - by_hand).max() <= 1  # PNG of the same fused image (rounding aside)
    assert np.abs(got - chosen).max() > 10


def test_the_demo_offers_a_learned_file_and_masks_it_with_its_own_class(request, learned_file, face, expected,
                                                                        tmp_path):
    from deghost.apps.demo.session import DemoSession

    folder = engines_copy(tiny_engines(request), tmp_path / "engines")
    for path in (learned_file, learned_file.with_suffix(".json")):
        shutil.copyfile(path, folder / DIRECTIONS_FOLDER / path.name)
    demo = DemoSession(Pipeline.load(folder, backend="onnxruntime", device="cpu"), aligned=True)
    try:
        key = f"{DIRECTIONS_FOLDER}/{NAME}.npy"
        assert key in [value for _, value in demo.attribute_choices]
        view = demo.edit(face, key, 20.0, [], name="face")
    finally:
        demo.close()
    by_hand, chosen = expected
    assert np.abs(view.crops["none"].astype(int) - by_hand.astype(int)).max() <= 1
    assert np.abs(view.crops["none"].astype(int) - chosen.astype(int)).max() > 10


def test_build_directions_lists_learned_and_eogi_files_with_their_classes(learned_file, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    for path in (learned_file, learned_file.with_suffix(".json")):
        shutil.copyfile(path, extra / path.name)
    np.save(extra / "Mouth_Open.npy", np.random.default_rng(1).standard_normal((18, 512)))  # EOGI's spelling
    np.save(extra / "broken.npy", np.ones((3, 7)))
    notes = []
    records = write_directions(tmp_path / "engines", seed=0, extra=extra, log=notes.append)
    assert {name: r.get("class_index") for name, r in records.items()} == {
        "smile": 15, "age": 16, "beard": 12, "bushy_eyebrows": 6, NAME: LEARNED_CLASS, "mouth_open": 10}
    assert records[NAME]["source"].startswith("untrained")  # learned from untrained weights, so labelled
    assert (tmp_path / "engines" / DIRECTIONS_FOLDER / f"{NAME}.json").is_file()
    assert len(notes) == 1 and "broken.npy" in notes[0] and "(3, 7)" in notes[0]


def test_the_official_folder_brings_the_eogi_extras_it_holds(tmp_path):
    official = tmp_path / "ckpt"
    official.mkdir()
    for name in ("Smiling", "Old", "Beard", "Bushy_Eyebrows", "Eyeglasses"):
        np.save(official / f"{name}.npy", np.random.default_rng(0).standard_normal((18, 512)))
    records = write_directions(tmp_path / "engines", checkpoints=official)
    assert records["eyeglasses"]["class_index"] == 7 and "narrow_eyes" not in records
    assert json.dumps(records)  # the manifest stores them as they are


def test_build_takes_directions_from_the_command_line():
    import argparse

    from deghost.export.build import add_build_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_build_arguments(parser)
    options = options_from_args(parser.parse_args(["--random-init", "0", "--directions", "learned/"]))
    assert options.directions == Path("learned")
