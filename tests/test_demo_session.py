"""The demo's work without a browser: Figure 2's views, mask overlays, downloads and the page's messages,
on the tiny untrained engines through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deghost.apps.demo.attributes import EXTRA_LABEL
from deghost.apps.demo.session import BUNDLED_SAMPLES, DemoSession, find_samples, timings_text
from deghost.manifest import DIRECTIONS_FOLDER
from deghost.runtime.backends import BackendError
from deghost.runtime.images import ImageError, read_image
from deghost.runtime.pipeline import Pipeline
from tests.helpers.tiny_engines import engines_copy, tiny_engines

IMAGES = Path(__file__).parent / "data" / "images"
ASTRONAUT = IMAGES / "astronaut.png"


@pytest.fixture(scope="module")
def session(request):
    demo = DemoSession(Pipeline.load(tiny_engines(request), backend="onnxruntime", device="cpu"))
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def photo():
    return read_image(ASTRONAUT).rgb


@pytest.fixture(scope="module")
def edited(session, photo):
    return session.edit(photo, "smile", -10.0, ["network"], name="astronaut")


def test_views_are_figure_2_with_only_the_modes_that_ran(session, edited):
    panels = session.panels(edited)
    assert [title for title, _ in panels] == ["original", "fused", "EOGI", "ours", "Poisson"]
    shown = dict(panels)
    assert shown["EOGI"] is None and shown["Poisson"] is None
    side = session.pipe.preset.image_size
    for title in ("original", "fused", "ours"):
        assert shown[title].shape == (side, side, 3) and shown[title].dtype == np.uint8
    assert edited.label == "smile-10"
    assert "untrained" in session.banner


def test_the_diffcam_overlay_tints_the_mask_and_leaves_the_rest(session, edited):
    plain, tinted = dict(session.panels(edited)), dict(session.panels(edited, ["diffcam"]))
    mask = edited.diffcam_mask
    assert mask.min() == 0.0 and mask.max() > 0.5, "the untrained Diff-CAM mask should still mark a region"
    outside = mask == 0
    np.testing.assert_array_equal(tinted["fused"][outside], plain["fused"][outside])
    # Inside, half the pixel plus half the overlay colour, weighted by the mask (colour: any one of
    # the channels moves towards it, so check the weighted mean directly).
    weight = 0.5 * mask[..., None]
    colour = np.array([255, 64, 32], np.float32)
    expected = np.rint(plain["fused"] * (1 - weight) + colour * weight)
    assert np.abs(tinted["fused"].astype(np.float32) - expected).max() <= 1


def test_the_face_mask_overlay_is_the_poisson_face_region(session, edited):
    region = session.face_mask(edited)
    side = session.pipe.preset.image_size
    assert region.shape == (side, side) and set(np.unique(region)) <= {0, 255}
    tinted = dict(session.panels(edited, ["face"]))["original"]
    np.testing.assert_array_equal(tinted[region == 0], edited.original[region == 0])


def test_downloads_are_the_result_photo_and_the_grid(session, edited, photo):
    result, grid = session.downloads(edited)
    assert result.name == "astronaut_smile-10_network.png" and grid.name == "astronaut_smile-10_grid.png"
    np.testing.assert_array_equal(read_image(result).rgb, edited.photos["network"])
    expected_shape = photo.shape if session.finds_faces else edited.original.shape
    assert read_image(result).rgb.shape == expected_shape
    assert read_image(grid).rgb.shape[1] == 3 * edited.original.shape[1]  # original | fused | ours


def test_timings_list_every_stage_that_ran_and_the_total(edited):
    text = timings_text(edited)
    for stage in ("encoder", "generator", "diffcam", "suppressor", "glue"):
        assert f"{stage} " in text
    assert "deghosting" not in text and text.endswith(f"total {edited.seconds:.2f} s")


def test_an_unknown_attribute_names_the_choices(session, photo):
    with pytest.raises(ValueError, match="unknown attribute 'hair_colour'; choose one of .*smile"):
        session.edit(photo, "hair_colour", 20.0, ["network"])


def test_a_bad_upload_is_named_by_its_file_name_not_its_temporary_path(session, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError) as error:
        session.read(bad)
    assert str(error.value).startswith("holiday.png could not be decoded")
    assert str(tmp_path) not in str(error.value)


def test_old_downloads_are_deleted_and_the_latest_kept(session, edited, monkeypatch):
    monkeypatch.setattr("deghost.apps.demo.session.KEEP_DOWNLOADS", 2)
    written = [session.downloads(edited) for _ in range(4)]
    folders = [paths[0].parent for paths in written]
    assert [folder.exists() for folder in folders] == [False, False, True, True]
    assert all(path.is_file() for path in written[-1])


def test_the_sample_photos_ship_with_the_package_and_each_name_is_offered_once():
    bundled = find_samples([BUNDLED_SAMPLES])
    assert [p.name for p in bundled] == ["astronaut.png", "grace_hopper.jpg"]
    for path in bundled:  # the test photos, byte for byte, with a notice of where they come from
        assert path.read_bytes() == (IMAGES / path.name).read_bytes()
    assert "public domain" in (BUNDLED_SAMPLES / "NOTICE").read_text()
    assert find_samples([IMAGES, BUNDLED_SAMPLES]) == [IMAGES / "astronaut.png", IMAGES / "grace_hopper.jpg"]


# -- the attributes: the manifest's, and direction files of the engines folder it does not list ------------

@pytest.fixture(scope="module")
def extra_session(request, module_tmp_path):
    """The tiny engines plus directions/glasses.npy (usable, not in the manifest) and directions/broken.npy
    (the wrong shape), edited as aligned crops."""
    folder = engines_copy(tiny_engines(request), module_tmp_path / "engines")
    pipe = Pipeline.load(folder, backend="onnxruntime", device="cpu")
    shape = (pipe.preset.n_latent, pipe.preset.style_dim)
    np.save(folder / DIRECTIONS_FOLDER / "glasses.npy", np.random.default_rng(3).standard_normal(shape))
    np.save(folder / DIRECTIONS_FOLDER / "broken.npy", np.ones((3, 7)))
    demo = DemoSession(pipe, aligned=True)
    yield demo
    demo.close()


def test_direction_files_the_manifest_does_not_list_are_offered_after_the_paper_attributes(extra_session):
    glasses = EXTRA_LABEL.format(name="glasses")
    assert extra_session.attribute_choices == [("smile", "smile"), ("age", "age"), ("beard", "beard"),
                                               ("bushy_eyebrows", "bushy_eyebrows"),
                                               (glasses, "directions/glasses.npy")]
    assert len(extra_session.notes) == 1 and extra_session.notes[0].startswith("broken.npy is not offered")
    assert "(3, 7)" in extra_session.notes[0]


def test_an_unlisted_direction_file_edits_like_a_manifest_attribute(extra_session, photo):
    view = extra_session.edit(photo, "directions/glasses.npy", 20.0, [], name="astronaut")
    assert view.label == "glasses+20" and set(view.crops) == {"none"}
    side = extra_session.pipe.preset.image_size
    assert view.crops["none"].shape == (side, side, 3)
    assert not np.array_equal(view.crops["none"], view.original)  # the direction changed the face


def test_without_any_direction_the_command_exits_2_saying_how_to_build_them(request, tmp_path, capsys):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install '.[demo]'")
    from deghost.apps.cli import main

    folder = engines_copy(tiny_engines(request), tmp_path / "engines", directions=False)
    assert main(["demo", "--engines", str(folder)]) == 2
    error = capsys.readouterr().err
    assert "lists no editing direction" in error and str(folder / "manifest.json") in error
    assert "deghost build --checkpoints DIR --stages generator" in error


# -- a failure on the server's side: said in the page's status, and the next click works -------------------

def _click(app, *inputs) -> str:
    """The page's status after one click of Edit (the run handler's last update), as Gradio would show it."""
    run = next(fn for fn in app.fns.values() if fn.name == "on_run")
    updates = list(run.fn(*inputs))
    return next(value for component, value in updates[-1].items() if component.elem_id == "status")


def test_a_backend_failure_is_shown_in_the_status_and_the_demo_keeps_serving(session, monkeypatch):
    pytest.importorskip("gradio", reason="the demo extra is not installed: pip install '.[demo]'")
    from deghost.apps.demo.app import build_app

    app = build_app(session)
    inputs = (None, str(ASTRONAUT), "smile", 20.0, ["network"], [], "all")
    opened = session.pipe.backend

    def failing(stage):
        if stage == "generator":
            raise BackendError("generator: out of device memory (injected)")
        return opened(stage)

    monkeypatch.setattr(session.pipe, "backend", failing)
    status = _click(app, *inputs)
    assert "the edit failed on the server (generator: out of device memory (injected))" in status
    assert "still serves" in status and status.startswith("**⚠")
    monkeypatch.undo()
    assert _click(app, *inputs).startswith("done: smile+20")
