"""Bounded cost per input (issue 25): sizes read from headers, refusals before decoding in every front
end, OpenCV's own decoder cap for headers that lie, the face search bounded by the photo's size, and
each front end's wording.

The huge files are real files (tests/helpers/huge_images.py): a complete 30000×30000 black PNG of 2.6 MB
and a JPEG whose frame header claims 60000×60000. Time and memory bounds here are the generous ones the
issue asks for ("well under a second", no pixel buffer): decoding the PNG would take ~18 s and 2.7 GB.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.apps import refusals
from deghost.apps.serve.service import ClientError, decode_upload
from deghost.runtime.faces import searched_min_face
from deghost.runtime.faces.detector import FACE_IN_INPUT, INPUT_SIDE, TILE_STRIDE, pyramid
from deghost.runtime.image_header import header_size
from deghost.runtime.images import TooLargeError, read_image
from deghost.runtime.limits import MAX_PIXELS, MIN_FACE_FRACTION
from tests.helpers.huge_images import black_png, jpeg_claiming, small_jpeg

REPO = Path(__file__).resolve().parents[1]
UNDER_A_SECOND = 1.0  # the "well under a second"; the refusals measure a few ms here
NO_PIXEL_BUFFER_MIB = 64  # the refused images' buffers are 2,575 MiB (30000²×3) and 10,300 MiB


@pytest.fixture(scope="module")
def huge_files(module_tmp_path):
    png, jpeg = module_tmp_path / "black-30000.png", module_tmp_path / "claims-60000.jpg"
    png.write_bytes(black_png(30000, 30000))
    jpeg.write_bytes(jpeg_claiming(60000, 60000))
    return {"png": png, "jpeg": jpeg}


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


@contextmanager
def bounded(seconds: float, mib: float):
    """Asserts the block took under `seconds` and grew neither Python's traced memory (numpy included)
    nor the process's peak resident memory (OpenCV's buffers included) by `mib`."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS here (/proc/self/clear_refs)")
    before = _peak_rss_mib()
    tracemalloc.start()
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    grown = _peak_rss_mib() - before
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert traced_peak < mib, f"Python/numpy allocated {traced_peak:.0f} MiB"
    assert grown < mib, f"peak RSS grew {grown:.0f} MiB"


# -- sizes from headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
def test_the_header_gives_the_size_opencv_decodes(suffix):
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)
    ok, encoded = cv2.imencode(suffix, pixels)
    assert ok
    assert header_size(encoded.tobytes()) == (53, 37)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 EXIF block (little-endian TIFF, one IFD entry: Orientation) after SOI."""
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 274, 3, 1, orientation, 0)
    tiff += struct.pack("<I", 0)
    payload = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_gives_the_upright_size_as_opencv_applies_it(orientation):
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 48, 3), np.uint8))
    data = _with_exif_orientation(encoded.tobytes(), orientation)
    upright = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    assert header_size(data) == (upright.shape[1], upright.shape[0])


def test_an_unknown_or_truncated_header_is_left_to_the_decoder():
    assert header_size(b"P6 8000 6000 255\n") is None
    assert header_size(small_jpeg()[:40]) is None
    assert header_size(black_png(8, 100)[:20]) is None


def test_the_header_walk_is_bounded_on_a_file_of_fill_bytes():
    data = b"\xff\xd8" + b"\xff" * (16 * 2**20 - 2)  # legal JPEG padding, as much as an upload may carry
    started = time.perf_counter()
    assert header_size(data) is None
    assert time.perf_counter() - started < UNDER_A_SECOND


# -- refused before decoding, in every front end ----------------------------------------------------------


@pytest.mark.parametrize("kind, claimed", [("png", "30000×30000"), ("jpeg", "60000×60000")])
def test_decode_upload_refuses_a_huge_header_with_413_at_once(huge_files, kind, claimed):
    data = huge_files[kind].read_bytes()
    with bounded(UNDER_A_SECOND, NO_PIXEL_BUFFER_MIB), pytest.raises(ClientError) as refused:
        decode_upload(data)
    assert refused.value.status == 413
    assert claimed in str(refused.value) and "send a smaller image" in str(refused.value)


def test_read_image_refuses_without_reading_past_the_header(huge_files):
    with bounded(UNDER_A_SECOND, NO_PIXEL_BUFFER_MIB), pytest.raises(TooLargeError) as refused:
        read_image(huge_files["png"])
    assert refused.value.size == (30000, 30000) and refused.value.amount == 900_000_000


def test_an_image_at_the_limit_is_accepted_and_one_pixel_row_more_is_not(tmp_path):
    width = 8000
    rows = MAX_PIXELS // width  # 5000 rows: exactly MAX_PIXELS
    assert header_size(black_png(width, rows)) == (width, rows)
    assert decode_upload(black_png(width, 100)).shape == (100, width, 3)
    with pytest.raises(ClientError) as refused:
        decode_upload(black_png(width, rows + 100))
    assert refused.value.status == 413


def test_a_header_that_lies_to_our_reader_is_refused_by_opencvs_own_cap():
    """Junk before the frame header stops our strict marker walk (no size) while libjpeg skips it and reads
    8000×6000 = 48 MP: OpenCV's cap (OPENCV_IO_MAX_IMAGE_PIXELS, read when cv2 is first imported, so in a
    fresh process that imports deghost.runtime first) refuses it before allocating."""
    probe = (
        "import sys, numpy as np; import deghost.runtime.images as images\n"
        "from tests.helpers.huge_images import jpeg_claiming\n"
        "data = jpeg_claiming(8000, 6000, junk_before_frame=b'\\0\\0junk')\n"
        "assert images.header_size(data) is None\n"
        "try:\n    images.decode_image(np.frombuffer(data, np.uint8), 'liar')\n"
        "except images.TooLargeError as error:\n    print('refused:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "refused: liar decodes to more than the 40,000,000 pixels" in done.stdout, done.stderr


def test_the_decoder_cap_is_the_pixel_limit_in_a_fresh_process():
    probe = "import os, deghost.runtime, cv2; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == str(MAX_PIXELS), done.stderr


# -- each front end's words ------------------------------------------------------------------------------


def test_each_front_end_words_the_same_refusal_in_its_own_terms(huge_files):
    with pytest.raises(TooLargeError) as refused:
        read_image(huge_files["png"])
    words = {front: refusals.too_large(refused.value, front, "face.png") for front in refusals.FRONT_ENDS}
    assert all("30000×30000" in text and f"{MAX_PIXELS:,}" in text for text in words.values())
    assert len(set(words.values())) == 3
    assert "upload a smaller photo" in words["web"] and "send a smaller image" in words["http"]
    alpha = {front: refusals.alpha_out_of_range(150.0, front) for front in refusals.FRONT_ENDS}
    assert alpha["cli"].startswith("--alpha") and "query parameter alpha" in alpha["http"]
    assert "slider" in alpha["web"] and "--" not in alpha["web"]


# -- the face search bounded by the photo's size --------------------------------------------------------------


def _runs(width: int, height: int, min_face: float) -> int:
    return sum(level.tiles for level in pyramid(width, height, searched_min_face(width, height, min_face)))


def test_the_face_search_costs_the_same_on_any_photo_larger_than_its_reduced_copy():
    """Past FACE_IN_INPUT / MIN_FACE_FRACTION (2000 px) of long side, the finest level is that reduced copy:
    the detector runs stop growing with the photo, whatever min_face is asked for."""
    reduced = FACE_IN_INPUT / MIN_FACE_FRACTION
    side = int(np.sqrt(MAX_PIXELS))
    assert _runs(4000, 4000, 40) == _runs(side, side, 40) == _runs(side, side, 5)
    # The bound, from the geometry alone: a square finest level of `reduced` px is read in n² tiles
    # (n = ceil((reduced − 128) / stride) + 1), each coarser level at most half as wide.
    tiles = int(np.ceil((reduced - INPUT_SIDE) / TILE_STRIDE)) + 1
    bound = sum(max(1, int(np.ceil(tiles / 2**k))) ** 2 for k in range(8))
    for width, height in [(side, side), (30000, 1333), (8000, 5000), (6000, 4000)]:
        assert _runs(width, height, 1) <= bound, (width, height)


# -- the demo and folder runs, on the tiny untrained engines through the real pipeline ----------------------


@pytest.fixture(scope="module")
def pipe(request):
    from deghost.runtime.pipeline import Pipeline
    from tests.helpers.tiny_engines import tiny_engines

    opened = Pipeline.load(tiny_engines(request), backend="onnxruntime", device="cpu")
    opened.prepare("network")
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def demo(pipe):
    from deghost.apps.demo.session import DemoSession

    return DemoSession(pipe)


@pytest.mark.parametrize("kind, claimed", [("png", "30000×30000"), ("jpeg", "60000×60000")])
def test_the_demo_refuses_a_huge_photo_at_once_in_the_pages_words(demo, huge_files, kind, claimed):
    with bounded(UNDER_A_SECOND, NO_PIXEL_BUFFER_MIB), pytest.raises(TooLargeError) as refused:
        demo.read(huge_files[kind])
    message = str(refused.value)
    assert claimed in message and "upload a smaller photo" in message
    assert "--" not in message and str(huge_files[kind].parent) not in message  # no flags, no server paths


def test_the_demo_refuses_what_the_service_refuses_in_the_pages_words(demo):
    from deghost.apps.serve.service import parse_params
    from deghost.runtime.faces import NoFaceError

    photo = np.full((300, 400, 3), 128, np.uint8)
    with pytest.raises(ClientError):
        parse_params({"alpha": "150"}, ["smile"])
    with pytest.raises(ValueError, match="α slider must be a finite number in \\[-100, 100\\]"):
        demo.edit(photo, "smile", 150.0, ["network"])
    with pytest.raises(NoFaceError) as no_face:
        demo.edit(photo, "smile", 10.0, ["network"], name="grey.png")
    assert "no face of at least 40 px found in grey.png (400×300)" in str(no_face.value)
    assert "--" not in str(no_face.value).replace("started with --aligned", "")  # a control, not a flag to type


def test_a_folder_run_reports_and_skips_huge_files_at_once(pipe, huge_files, tmp_path):
    from deghost.apps.edit.folder import FolderRun, run_folder
    from deghost.runtime.images import write_image

    ordinary = write_image(tmp_path / "grey.png", np.full((64, 64, 3), 128, np.uint8))
    with bounded(2 * UNDER_A_SECOND, NO_PIXEL_BUFFER_MIB):
        report = run_folder(pipe, FolderRun([huge_files["png"], huge_files["jpeg"], ordinary], tmp_path / "out"),
                            progress=False)
    failed = dict(report.failed)
    assert set(failed) == {huge_files["png"], huge_files["jpeg"], ordinary}  # the grey square has no face
    assert "30000×30000" in failed[huge_files["png"]] and "resize it first" in failed[huge_files["png"]]
    assert "60000×60000" in failed[huge_files["jpeg"]]
    assert "--min-face" in failed[ordinary]  # the terminal's words


def test_a_crowd_keeps_the_sixteen_largest_faces_and_says_how_many_were_left_out():
    """20 faces (the astronaut tiled 5 × 4, the last row smaller): the 16 largest are edited and the photo's
    warning counts those left out (limits.MAX_FACES, written here from docs/limits.md: 16)."""
    from deghost.runtime.faces import FaceFinder, too_many_faces

    face = read_image(Path(__file__).parent / "data" / "images" / "astronaut.png").rgb
    big = np.hstack([cv2.resize(face, (400, 400))] * 5)
    small = np.hstack([cv2.resize(face, (320, 320))] * 5 + [np.zeros((320, 400), np.uint8)[..., None].repeat(3, 2)])
    crowd = np.vstack([big, big, big, small[:, :2000]])
    faces, left_out = FaceFinder().search(crowd, 256)
    # 20 faces in the photo; the detector may miss one on a tile seam (here: 1 of the 15 larger ones)
    assert len(faces) == 16 and left_out in (3, 4)
    assert sum(f.box[1] >= 1200 for f in faces) <= 1  # the larger faces first; the smaller row left out
    assert f"{left_out} more face(s)" in too_many_faces(left_out) and "16 largest" in too_many_faces(left_out)
    assert FaceFinder().search(crowd[:400, :800], 256)[1] == 0  # two faces: none left out
