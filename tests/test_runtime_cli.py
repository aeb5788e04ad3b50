"""`deghost edit` and folder mode: bad inputs are skipped and reported, outputs are kept or protected, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.apps.edit import cli
from deghost.manifest import Manifest
from deghost.runtime.faces import NoFaceError
from deghost.runtime.faces.paste import face_region, paste_back
from deghost.runtime.images import read_image
from deghost.runtime.pipeline import Pipeline
from tests.helpers.bad_files import oversized_png_header

OK, SOME_FAILED, USAGE = 0, 1, 2  # the exit codes `deghost edit --help` documents

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"
GRACE = ASTRONAUT.with_name("grace_hopper.jpg")


def portraits() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut (512², a ~98 px face) and grace_hopper cut to 512 high (a ~200 px face)."""
    return read_image(ASTRONAUT).rgb, read_image(GRACE).rgb[44:556]


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="deghost")
    cli.add_edit_command(main.add_subparsers(dest="command", required=True))
    return main


@pytest.fixture(scope="module")
def shared_pipe(tiny_onnx_dir):
    """One pipeline for every CLI run of this module (opening the stages costs more than a tiny edit)."""
    with Pipeline.load(tiny_onnx_dir, backend="onnxruntime", device="cpu") as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def deghost_edit(shared_pipe, tiny_onnx_dir):
    """Run `deghost edit ARGS...` in-process on the shared pipeline → (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cli.Pipeline, "load", staticmethod(lambda *_, **__: shared_pipe))
            patch.setattr(shared_pipe, "close", lambda: None)  # the CLI closes its pipeline; this one is shared
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                parsed = parser().parse_args(["edit", *args, "--engines", str(tiny_onnx_dir), "--quiet"])
                code = parsed.run(parsed)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="module")
def folder_run(deghost_edit, module_tmp_path):
    """A folder with an RGB face, a 16-bit grayscale face and a corrupt file, plus a missing file."""
    inputs = module_tmp_path / "inputs"
    inputs.mkdir()
    rgb = read_image(ASTRONAUT).rgb
    cv2.imwrite(str(inputs / "face.png"), cv2.cvtColor(rgb[::2, ::2], cv2.COLOR_RGB2BGR))
    gray16 = cv2.cvtColor(rgb[::2, ::2], cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    cv2.imwrite(str(inputs / "gray16.png"), gray16)
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    out = module_tmp_path / "out"
    code, stdout, stderr = deghost_edit(str(inputs), str(inputs / "missing.png"), "--out", str(out),
                                        "--suppress", "none", "--batch", "2")
    return {"inputs": inputs, "out": out, "code": code, "stdout": stdout, "stderr": stderr}


def test_folder_mode_skips_corrupt_and_missing_files_writes_the_rest_and_exits_1(folder_run):
    assert folder_run["code"] == SOME_FAILED
    written = sorted(p.name for p in folder_run["out"].iterdir())
    assert written == ["face_smile+20_none.png", "gray16_smile+20_none.png"]
    assert read_image(folder_run["out"] / "face_smile+20_none.png").rgb.shape == (256, 256, 3)
    assert "failed: " in folder_run["stdout"] and "corrupt.png could not be decoded" in folder_run["stdout"]
    assert "missing.png does not exist" in folder_run["stdout"]


def test_a_file_too_large_to_decode_fails_alone_and_the_run_goes_on(deghost_edit, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "face.png"), cv2.cvtColor(read_image(ASTRONAUT).rgb[::2, ::2], cv2.COLOR_RGB2BGR))
    (inputs / "huge.png").write_bytes(oversized_png_header())
    code, stdout, _ = deghost_edit(str(inputs), "--out", str(tmp_path / "out"), "--suppress", "none")
    assert code == SOME_FAILED
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face_smile+20_none.png"]
    # refused from its header before OpenCV decodes anything (tests/test_limits.py has the limits themselves)
    assert "huge.png" in stdout and "resize it first" in stdout and "1 file(s) written, 1 failed" in stdout


def test_grayscale_and_16_bit_inputs_are_edited_with_warnings(folder_run):
    log = folder_run["stdout"]
    assert "gray16.png: 16-bit image scaled to 8 bits" in log
    assert "gray16.png: grayscale image repeated into three RGB channels" in log


def test_the_summary_reports_speed_per_stage_times_and_the_untrained_label(folder_run):
    summary = folder_run["stdout"]
    assert "2 image(s) in" in summary and "images/s) on onnxruntime/cpu fp32" in summary
    assert "2 file(s) written, 2 failed, 0 kept" in summary
    assert "per image, ms: encoder" in summary and "glue" in summary and "decode (overlapped)" in summary
    assert "untrained weights: timings and plumbing only" in summary


def test_existing_outputs_are_kept_unless_overwrite(folder_run, deghost_edit):
    face = folder_run["inputs"] / "face.png"
    output = folder_run["out"] / "face_smile+20_none.png"
    before = output.stat().st_mtime_ns
    code, stdout, _ = deghost_edit(str(face), "--out", str(folder_run["out"]), "--suppress", "none")
    assert code == OK and "0 file(s) written, 0 failed, 1 kept" in stdout
    assert output.stat().st_mtime_ns == before


def test_overwrite_replaces_outputs_but_never_an_input(deghost_edit, tmp_path):
    rgb = read_image(ASTRONAUT).rgb[::2, ::2]
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    # An input named like a's output: with the folder as --out, --overwrite must still spare it.
    victim = tmp_path / "a_smile+20_none.png"
    cv2.imwrite(str(victim), cv2.cvtColor(rgb[::-1], cv2.COLOR_RGB2BGR))
    victim_bytes = victim.read_bytes()
    stale = tmp_path / "a_smile+20_none_smile+20_none.png"  # the second input's output, from an earlier run
    stale.write_bytes(b"stale")

    code, stdout, _ = deghost_edit(str(tmp_path / "a.png"), str(victim), "--out", str(tmp_path),
                                   "--suppress", "none", "--overwrite", "--batch", "2")
    assert code == SOME_FAILED
    assert "refusing to write onto the input" in stdout and "1 failed" in stdout
    assert victim.read_bytes() == victim_bytes
    assert read_image(stale).rgb.shape == (256, 256, 3)


def test_grid_shows_original_fused_eogi_ours_under_the_untrained_banner(deghost_edit, folder_run, tmp_path):
    code, _, _ = deghost_edit(str(folder_run["inputs"] / "face.png"), "--out", str(tmp_path), "--grid", "--aligned")
    assert code == OK
    grid = read_image(tmp_path / "face_smile+20_grid.png").rgb
    assert (tmp_path / "face_smile+20_network.png").is_file()
    assert grid.shape[1] == 4 * 256 and grid.shape[0] > 256
    banner = grid[: (grid.shape[0] - 256) // 2]
    assert (banner[..., 0] > 150).any() and ((banner[..., 0] > 150) & (banner[..., 1] < 80)).any()  # red text
    original = read_image(folder_run["inputs"] / "face.png").rgb
    assert np.abs(grid[-256:, :256].astype(int) - original).max() <= 1


def test_no_engines_is_a_configuration_error_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "face.png").write_bytes(ASTRONAUT.read_bytes())
    parsed = parser().parse_args(["edit", str(tmp_path / "face.png"), "--out", str(tmp_path / "out"),
                                  "--engines", str(tmp_path / "no_engines"), "--quiet"])
    assert parsed.run(parsed) == USAGE
    assert "no manifest.json" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_unknown_attribute_exits_2_listing_the_available_ones(deghost_edit, folder_run, tmp_path):
    code, _, stderr = deghost_edit(str(folder_run["inputs"] / "face.png"), "--out", str(tmp_path),
                                   "--attribute", "smiling")
    assert code == USAGE and "available: age, beard, bushy_eyebrows, smile" in stderr


def test_help_teaches_modes_outputs_and_exit_codes():
    text = parser()._subparsers._group_actions[0].choices["edit"].format_help()
    for needle in ("--attribute", "--suppress", "poisson", "--grid", "face_smile+20_network.png", "exit codes"):
        assert needle in text


def test_an_ordinary_photo_comes_back_at_its_own_size_with_only_the_face_changed(deghost_edit, tmp_path):
    photo = read_image(GRACE).rgb[44:556]  # 512 x 512, an unaligned portrait
    wide = np.hstack([photo, np.full((512, 200, 3), 90, np.uint8)])  # not square either
    cv2.imwrite(str(tmp_path / "wide.png"), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    code, _, _ = deghost_edit(str(tmp_path / "wide.png"), "--out", str(tmp_path / "out"), "--suppress", "none")
    assert code == OK
    out = read_image(tmp_path / "out" / "wide_smile+20_none.png").rgb
    assert out.shape == wide.shape
    assert np.array_equal(out[:, 512:], wide[:, 512:])  # far from the face: the input's pixels
    assert np.array_equal(out[-60:], wide[-60:])  # below the chin


def test_a_photo_without_a_face_fails_like_a_bad_file_and_writes_nothing(deghost_edit, folder_run, tmp_path):
    sky = np.full((300, 400, 3), (120, 170, 230), np.uint8)
    cv2.imwrite(str(tmp_path / "sky.png"), cv2.cvtColor(sky, cv2.COLOR_RGB2BGR))
    code, stdout, _ = deghost_edit(str(tmp_path / "sky.png"), str(folder_run["inputs"] / "face.png"),
                                   "--out", str(tmp_path / "out"), "--suppress", "none")
    assert code == SOME_FAILED
    assert "no face of at least 40 px found in " in stdout and "sky.png (400×300)" in stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face_smile+20_none.png"]


def test_photo_grid_shows_each_aligned_face_and_the_photo_before_and_after(deghost_edit, tmp_path):
    left, right = read_image(ASTRONAUT).rgb, read_image(GRACE).rgb[44:556]
    cv2.imwrite(str(tmp_path / "two.png"), cv2.cvtColor(np.hstack([left, right]), cv2.COLOR_RGB2BGR))
    code, _, _ = deghost_edit(str(tmp_path / "two.png"), "--out", str(tmp_path / "out"), "--grid")
    assert code == OK
    grid = read_image(tmp_path / "out" / "two_smile+20_grid.png").rgb
    # 2 faces × 4 aligned 256² columns, then the 1024 x 512 photo twice at 256 high (512 wide each).
    assert grid.shape[1] == 2 * 4 * 256 + 2 * 512
    assert read_image(tmp_path / "out" / "two_smile+20_network.png").rgb.shape == (512, 1024, 3)


def test_edit_photo_gives_faces_crops_and_one_pasted_photo_per_edit(shared_pipe):
    photo = np.hstack([read_image(ASTRONAUT).rgb, read_image(GRACE).rgb[44:556]])
    result = shared_pipe.edit_photo(photo, attribute="smile", alpha=[10.0, 20.0], suppress="none", min_face=40)
    assert len(result.faces) == 2 and len(result.photos["none"]) == 2
    assert all(p.shape == photo.shape and p.dtype == np.uint8 for p in result.photos["none"])
    assert result.result.images.shape == (2, 3, 256, 256) and len(result.result.outputs["none"]) == 4
    assert result.faces[0].crop.shape == (256, 256, 3) and result.faces[0].transform.shape == (2, 3)
    assert {"faces", "paste"} <= set(result.result.timings_ms)
    with pytest.raises(NoFaceError):
        shared_pipe.edit_photo(np.zeros((200, 200, 3), np.uint8))


def test_a_file_whose_decoding_raises_anything_else_fails_alone_naming_the_error_and_the_run_goes_on(
        deghost_edit, tmp_path):
    from deghost.apps.edit import folder

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("face.png", "crashes.png"):  # both valid images: only the decoder stand-in below tells them apart
        cv2.imwrite(str(inputs / name), cv2.cvtColor(read_image(ASTRONAUT).rgb[::2, ::2], cv2.COLOR_RGB2BGR))
    real = folder.read_image

    def read_image_that_crashes_on_one_file(path):
        if Path(path).name == "crashes.png":
            raise RuntimeError("decoder crashed")  # not an ImageError: the catch-all branch
        return real(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder, "read_image", read_image_that_crashes_on_one_file)
        code, stdout, _ = deghost_edit(str(inputs), "--out", str(tmp_path / "out"), "--suppress", "none",
                                       "--batch", "2")
    assert code == SOME_FAILED
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face_smile+20_none.png"]
    assert f"failed: {inputs / 'crashes.png'}: could not be read (RuntimeError: decoder crashed)" in stdout
    assert "1 file(s) written, 1 failed" in stdout


@pytest.mark.parametrize("choice, edited", [(["--face", "1"], 1), (["--largest-face"], 0)])
def test_face_n_and_largest_face_edit_only_that_face(deghost_edit, shared_pipe, tmp_path, choice, edited):
    astronaut, grace = portraits()
    photo = np.hstack([grace, astronaut])  # face 0 (left) the larger, face 1 the smaller
    faces = shared_pipe.find_faces(photo)
    assert len(faces) == 2 and faces[0].size > faces[1].size
    code, _, _ = deghost_edit(str(write_rgb(tmp_path / "two.png", photo)), *choice, "--out", str(tmp_path / "out"),
                              "--suppress", "none")
    assert code == OK
    changed = np.any(read_image(tmp_path / "out" / "two_smile+20_none.png").rgb != photo, axis=2)
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = faces[edited].box
    assert len(xs) and x0 <= xs.mean() <= x1 and y0 <= ys.mean() <= y1  # the chosen face changed
    ox0, oy0, ox1, oy1 = faces[1 - edited].box.astype(int)
    assert not changed[oy0:oy1, ox0:ox1].any()  # the other did not


def test_each_face_gets_the_edit_of_its_own_result_row(shared_pipe):
    photo = np.hstack(portraits())
    done = shared_pipe.edit_photo(photo, suppress="none")
    edited, pasted = done.result.rgb("none"), done.photos["none"][0]
    boxes = [face_region(face.landmarks, face.transform, face.crop.shape[0], photo.shape[:2])[0] for face in done.faces]
    assert boxes[0][2] <= boxes[1][0]  # the two faces' regions do not overlap
    for i, (face, (x0, y0, x1, y1)) in enumerate(zip(done.faces, boxes, strict=True)):
        own = paste_back(photo, edited[done.result.row(i)], face.crop, face.transform, face.landmarks)
        swapped = paste_back(photo, edited[done.result.row(1 - i)], face.crop, face.transform, face.landmarks)
        assert np.array_equal(pasted[y0:y1, x0:x1], own[y0:y1, x0:x1])
        assert not np.array_equal(swapped[y0:y1, x0:x1], own[y0:y1, x0:x1])  # the rows' edits tell apart


def six_faces() -> np.ndarray:
    """A 1536x1024 group photo: the two portraits and their mirror images in a 3x2 grid."""
    astronaut, grace = portraits()
    top = np.hstack([astronaut, grace, astronaut[:, ::-1]])
    return np.ascontiguousarray(np.vstack([top, np.hstack([grace[:, ::-1], astronaut, grace])]))


def test_a_group_photo_goes_through_the_networks_in_chunks_of_max_rows(shared_pipe, monkeypatch):
    batches: dict[str, list[int]] = {"encoder": [], "generator": []}
    for stage, sizes in batches.items():
        backend = shared_pipe.backend(stage)

        def counted(feeds, *args, _run=backend.run, _sizes=sizes, **kwargs):
            _sizes.append(len(next(iter(feeds.values()))))
            return _run(feeds, *args, **kwargs)

        monkeypatch.setattr(backend, "run", counted)
    monkeypatch.setattr(shared_pipe, "max_rows", 4)
    done = shared_pipe.edit_photo(six_faces(), suppress="none")
    assert len(done.faces) == 6 and len(done.result.output) == 6
    # One edit: g faces are g encoder rows and 2g generator rows (the faces and their edits), so g = 2.
    assert batches == {"encoder": [2, 2, 2], "generator": [4, 4, 4]}


def test_max_rows_below_an_image_and_its_edit_is_refused(tiny_onnx_dir):
    with pytest.raises(ValueError, match="max_rows must be at least 2"):
        Pipeline(Manifest.load(tiny_onnx_dir), max_rows=1)


def test_a_photo_whose_face_finding_or_paste_back_raises_fails_alone_and_the_run_goes_on(
        deghost_edit, shared_pipe, tmp_path):
    astronaut = read_image(ASTRONAUT).rgb[::2, ::2]  # 256x256
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    photos = {"fine.png": astronaut, "finding.png": np.hstack([astronaut, astronaut[:, :20]]),
              "pasting.png": np.hstack([astronaut, astronaut[:, :40]])}  # told apart by their widths
    for name, rgb in photos.items():
        write_rgb(inputs / name, rgb)
    find, paste = shared_pipe.search_faces, shared_pipe.paste

    def find_that_crashes(photo, *args, **kwargs):
        if photo.shape[1] == photos["finding.png"].shape[1]:
            raise RuntimeError("landmarker crashed")
        return find(photo, *args, **kwargs)

    def paste_that_crashes(photo, *args, **kwargs):
        if photo.shape[1] == photos["pasting.png"].shape[1]:
            raise cv2.error("warpAffine crashed")
        return paste(photo, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shared_pipe, "search_faces", find_that_crashes)
        patch.setattr(shared_pipe, "paste", paste_that_crashes)
        code, stdout, _ = deghost_edit(str(inputs), "--out", str(tmp_path / "out"), "--suppress", "none",
                                       "--batch", "3")
    assert code == SOME_FAILED
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine_smile+20_none.png"]
    assert f"failed: {inputs / 'finding.png'}: finding its faces failed (RuntimeError: landmarker crashed)" in stdout
    pasting = "pasting the edited faces back failed (error: warpAffine crashed)"  # cv2.error's class is "error"
    assert f"failed: {inputs / 'pasting.png'}: {pasting}" in stdout
    assert "1 file(s) written, 2 failed" in stdout


def test_a_folder_run_is_checked_once_for_both_drivers_before_any_image_is_read(tmp_path):
    from deghost.apps.edit.folder import FolderRun

    taken = tmp_path / "out.png"
    taken.write_bytes(b"a file where the output folder should be")
    with pytest.raises(ValueError, match=f"output folder {taken} is a file; give a folder"):
        FolderRun([tmp_path / "missing.png"], taken)
    with pytest.raises(ValueError, match="batch must be at least 1; got 0"):
        FolderRun([tmp_path / "missing.png"], tmp_path / "out", batch=0)
    run = FolderRun([str(tmp_path / "a.png")], str(tmp_path / "out"), suppress="poisson", grid=True)
    assert run.inputs == [tmp_path / "a.png"] and run.out_dir == tmp_path / "out"
    assert run.modes == ["poisson", "network", "eogi"]  # the one asked for, then the grid's comparison
