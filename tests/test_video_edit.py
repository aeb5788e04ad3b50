"""The streaming clip edit (deghost.runtime.video.edit) and `deghost edit clip.mp4`, on clips made from
the bundled photos with a known motion and a synthetic sound track, with the tiny preset's engines."""

from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np
import pytest

from deghost.apps.edit import cli
from deghost.apps.exits import EXIT_FAILED
from deghost.runtime.images import from_model_output, to_model_input
from deghost.runtime.pipeline import Pipeline
from deghost.runtime.video.edit import ClipStats, edit_clip, edit_frames
from deghost.runtime.video.io import probe, read_frames
from tests.helpers.clips import motion_frames, photo, read_sound, sound, write_clip
from tests.helpers.stand_ins import IdentityStandIn


@pytest.fixture(scope="module")
def stand_in(tiny_onnx_dir):
    return IdentityStandIn.load(tiny_onnx_dir)


@pytest.fixture(scope="module")
def pan_clip(module_tmp_path):
    frames, _ = motion_frames(photo(scale=0.5), 10, "pan")
    return write_clip(module_tmp_path / "pan.mp4", frames, audio=sound(10 / 25))


def _mean_error(a, b, region=None) -> float:
    diff = np.abs(a.astype(int) - b)
    return float((diff[region] if region is not None else diff).mean())


def test_model_round_trip_is_exact():
    """The stand-in's premise: a crop converted to the model's range and back is the crop."""
    crop = photo(scale=0.5)
    assert np.array_equal(from_model_output(to_model_input(crop, 256)[0])[0], crop)


def test_identity_edit_returns_the_clip(stand_in, pan_clip, tmp_path):
    """Frame count, rate, duration, sound and pixels (inside and outside the face) as the source, within
    the codec's rounding: the edited clip differs from the source no more than a plain re-encode does."""
    report = edit_clip(stand_in, pan_clip, tmp_path / "out.mp4", alpha=0.0, suppress="none")
    before, after = probe(pan_clip), probe(tmp_path / "out.mp4")
    assert (after.frames, after.rate, after.duration_s) == (before.frames, before.rate, before.duration_s) == (
        10, 25, 0.4)
    assert report.frames == report.frames_with_faces == 10 and report.tracks == 1
    assert np.corrcoef(read_sound(pan_clip), read_sound(tmp_path / "out.mp4"))[0, 1] > 0.999
    for source, edited in zip(read_frames(pan_clip), read_frames(tmp_path / "out.mp4"), strict=True):
        face = np.zeros(source.rgb.shape[:2], bool)
        face[60:200, 60:200] = True  # around the astronaut's face at half scale
        assert _mean_error(edited.rgb, source.rgb, face) < 4  # crf 16 on this detailed clip: ~2-3
        assert _mean_error(edited.rgb, source.rgb, ~face) < 4


def test_a_clip_without_faces_passes_through(stand_in, tmp_path):
    frames = [np.full((64, 96, 3), 40 + 10 * i, np.uint8) for i in range(5)]
    source = write_clip(tmp_path / "wall.mov", frames)
    report = edit_clip(stand_in, source, tmp_path / "out.mov")
    assert report.frames == 5 and report.frames_with_faces == 0
    for frame, original in zip(read_frames(tmp_path / "out.mov"), read_frames(source), strict=True):
        assert _mean_error(frame.rgb, original.rgb) < 3  # one more encode of flat grey: yuv rounding, ~2 levels


def test_smoothing_steadies_the_crop_of_a_still_noisy_face(stand_in):
    """A still face under per-frame sensor noise: with the default window the crop's corners move less
    from frame to frame than without (window 1); measured ~3-5× less."""
    base = photo(scale=1.0)
    rng = np.random.default_rng(0)
    frames = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(10)]

    def corners(window: int) -> np.ndarray:
        out = edit_frames(stand_in, frames, alpha=0.0, suppress="none", window=window, stats=ClipStats())
        return np.stack([np.linalg.inv(np.vstack([f.faces[0].transform, [0, 0, 1]]))[:2, 2] for f in out])

    raw, steady = corners(1), corners(9)
    jitter = lambda c: np.linalg.norm(np.diff(c, axis=0), axis=1).mean()  # noqa: E731
    assert jitter(steady) < jitter(raw) / 2


def _deghost_edit(pipe, engines, *args):
    main = argparse.ArgumentParser(prog="deghost")
    cli.add_edit_command(main.add_subparsers(dest="command", required=True))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli.Pipeline, "load", staticmethod(lambda *_, **__: pipe))
        patch.setattr(pipe, "close", lambda: None)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parsed = main.parse_args(["edit", *args, "--engines", str(engines), "--quiet"])
            code = parsed.run(parsed)
    return code, out.getvalue(), err.getvalue()


def test_deghost_edit_a_folder_with_a_clip_and_a_bad_file(tiny_onnx_dir, tmp_path):
    """The real (untrained) tiny networks: the edited clip has the range's frames, rate and sound, the
    preview clip is source | edit, outside the face the frames are the source's; a non-video fails alone."""
    folder = tmp_path / "in"
    folder.mkdir()
    frames, _ = motion_frames(photo(scale=0.5), 3, "zoom")
    write_clip(folder / "zoom.mp4", frames, audio=sound(3 / 25))
    (folder / "notes.mkv").write_text("not a video")
    with Pipeline.load(tiny_onnx_dir, backend="onnxruntime", device="cpu") as pipe:
        code, out, err = _deghost_edit(pipe, tiny_onnx_dir, str(folder), "--out", str(tmp_path / "out"),
                                       "--suppress", "none", "--frames", "1:", "--grid")
    assert code == EXIT_FAILED, err
    assert "notes.mkv: not a readable video" in out
    assert "zoom.mp4: 2 frame(s), 2 with faces, 1 track(s)" in out
    edited, grid = tmp_path / "out" / "zoom_smile+20_none.mp4", tmp_path / "out" / "zoom_smile+20_grid.mp4"
    info = probe(edited)
    assert (info.frames, info.rate, info.width, info.height) == (2, 25, 256, 256)
    assert abs(info.duration_s - 2 / 25) < 1e-6
    assert info.audio_streams == 1 and len(read_sound(edited)) > 0
    assert (probe(grid).width, probe(grid).height) == (512, 256)
    for frame, source in zip(read_frames(edited), frames[1:], strict=True):
        outside = np.ones(source.shape[:2], bool)
        outside[40:220, 40:220] = False  # the face and its feathered paste region
        assert _mean_error(frame.rgb, source, outside) < 4
        assert _mean_error(frame.rgb, source, ~outside) > _mean_error(frame.rgb, source, outside)  # the edit


def test_usage_errors_name_the_flag(tiny_onnx_dir, tmp_path, stand_in):
    clip = write_clip(tmp_path / "c.mp4", [np.zeros((32, 32, 3), np.uint8)] * 2)
    for args, message in ((["--frames", "5:2"], "--frames 5:2"), (["--frames", "x"], "START:STOP"),
                          (["--smooth", "4"], "--smooth"), (["--aligned"], "leave out --aligned")):
        code, _, err = _deghost_edit(stand_in, tiny_onnx_dir, str(clip), "--out", str(tmp_path / "o"), *args)
        assert code == cli.EXIT_USAGE and message in err, (args, err)
