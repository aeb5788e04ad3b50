"""Image files in and out of the runtime: decoding quirks, model tensors, safe writing."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.runtime import images
from deghost.runtime.images import ImageError, from_model_output, read_image, to_model_input, write_image
from tests.helpers.bad_files import oversized_png_header

ASTRONAUT = Path(__file__).parent / "data" / "images" / "astronaut.png"


def quadrant_rgb(height: int = 20, width: int = 30) -> np.ndarray:
    """Four flat colours, one per quadrant, so any flip or rotation is visible (and JPEG keeps them)."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (230, 20, 20)
    rgb[: height // 2, width // 2 :] = (20, 230, 20)
    rgb[height // 2 :, : width // 2] = (20, 20, 230)
    rgb[height // 2 :, width // 2 :] = (230, 230, 20)
    return rgb


def save_with_opencv(path: Path, pixels_bgr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), pixels_bgr)
    return path


def exif_app1(orientation: int, byte_order: bytes) -> bytes:
    """A JPEG APP1 segment holding an EXIF block whose only entry is the Orientation tag (0x0112)."""
    e = "<" if byte_order == b"II" else ">"
    tiff = (
        byte_order
        + struct.pack(e + "HI", 42, 8)  # TIFF magic, offset of IFD0
        + struct.pack(e + "H", 1)  # one entry
        + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count 1, value, padding
        + struct.pack(e + "I", 0)  # no next IFD
    )
    payload = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


# What each EXIF orientation asks for, applied to the stored pixels (EXIF 2.3, tag 0x0112).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
@pytest.mark.parametrize("byte_order", [b"II", b"MM"], ids=["little_endian", "big_endian"])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, byte_order):
    encoded_ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(quadrant_rgb(), cv2.COLOR_RGB2BGR))
    assert encoded_ok
    jpeg = jpeg.tobytes()
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg[:2] + exif_app1(orientation, byte_order) + jpeg[2:])  # right after SOI
    as_stored = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    stored = cv2.cvtColor(as_stored, cv2.COLOR_BGR2RGB)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.rgb, UPRIGHT[orientation](stored))
    assert loaded.warnings == []


def test_exif_rotation_moves_the_top_left_quadrant_to_the_top_right(tmp_path):
    encoded_ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(quadrant_rgb(), cv2.COLOR_RGB2BGR))
    jpeg = jpeg.tobytes()
    path = tmp_path / "portrait.jpg"
    path.write_bytes(jpeg[:2] + exif_app1(6, b"II") + jpeg[2:])  # 6: rotate 90° clockwise to view
    rgb = read_image(path).rgb
    assert rgb.shape == (30, 20, 3)
    assert np.abs(rgb[2, -3].astype(int) - (230, 20, 20)).max() < 12


def test_8bit_png_reads_as_rgb_without_warnings(tmp_path):
    rgb = quadrant_rgb()
    loaded = read_image(save_with_opencv(tmp_path / "colour.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
    np.testing.assert_array_equal(loaded.rgb, rgb)
    assert loaded.rgb.dtype == np.uint8 and loaded.warnings == []
    assert loaded.path == tmp_path / "colour.png"


def test_real_photo_reads_as_512_square_rgb():
    loaded = read_image(ASTRONAUT)
    assert loaded.rgb.shape == (512, 512, 3) and loaded.warnings == []
    bgr = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(loaded.rgb, bgr[..., ::-1])


def test_16bit_png_is_scaled_to_8bit_with_rounding_and_a_note(tmp_path):
    levels = np.array([0, 128, 129, 257, 385, 386, 32767, 65406, 65407, 65535], np.uint16)
    bgr16 = np.stack([levels, levels, np.full_like(levels, 65535)], axis=-1)[None]
    loaded = read_image(save_with_opencv(tmp_path / "deep.png", bgr16))
    expected = np.array([0, 0, 1, 1, 1, 2, 127, 254, 255, 255], np.uint8)  # round(v / 257)
    np.testing.assert_array_equal(loaded.rgb[0, :, 2], expected)  # blue came first in BGR
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], 255)
    assert any("16-bit" in warning for warning in loaded.warnings)


def test_grayscale_png_is_repeated_into_rgb_with_a_warning(tmp_path):
    gray = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    loaded = read_image(save_with_opencv(tmp_path / "gray.png", gray))
    np.testing.assert_array_equal(loaded.rgb, np.repeat(gray[..., None], 3, axis=-1))
    assert any("grayscale" in warning for warning in loaded.warnings)


def test_alpha_channel_is_dropped_with_a_warning(tmp_path):
    rgb = quadrant_rgb()
    alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], axis=0)
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha])
    loaded = read_image(save_with_opencv(tmp_path / "alpha.png", bgra))
    np.testing.assert_array_equal(loaded.rgb, rgb)  # not composited: the colour samples as stored
    assert any("alpha" in warning for warning in loaded.warnings)


def test_non_ascii_path_reads_and_writes(tmp_path):
    rgb = quadrant_rgb()
    path = write_image(tmp_path / "visages_é" / "顔.png", rgb)
    np.testing.assert_array_equal(read_image(path).rgb, rgb)


def test_missing_file_raises_image_error_naming_it(tmp_path):
    with pytest.raises(ImageError, match="nowhere.png does not exist") as caught:
        read_image(tmp_path / "nowhere.png")
    assert isinstance(caught.value, ValueError)


def test_directory_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_empty_file_raises_image_error(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageError, match="empty.jpg is empty"):
        read_image(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated_png"])
def test_corrupt_file_raises_image_error(tmp_path, damage):
    path = tmp_path / "broken.png"
    if damage == "garbage":
        path.write_bytes(b"this is not an image at all" * 10)
    else:
        encoded_ok, png = cv2.imencode(".png", quadrant_rgb(64, 64))
        path.write_bytes(png.tobytes()[: len(png) // 2])
    with pytest.raises(ImageError, match="broken.png could not be decoded"):
        read_image(path)


def test_float_samples_are_refused_as_unsupported(tmp_path):
    path = save_with_opencv(tmp_path / "float.tiff", np.ones((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match="float32 samples, which are not supported"):
        read_image(path)


def test_model_input_of_a_1024_square_has_no_warnings_and_spans_minus_one_to_one():
    rgb = np.zeros((1024, 1024, 3), np.uint8)
    rgb[:, 512:] = 255
    x, warnings = to_model_input(rgb)
    assert x.shape == (1, 3, 1024, 1024) and x.dtype == np.float32 and warnings == []
    assert x.min() == -1.0 and x.max() == 1.0


def test_model_input_resizes_other_sizes_with_an_ffhq_warning():
    photo = read_image(ASTRONAUT).rgb
    x, warnings = to_model_input(photo, size=768)
    assert x.shape == (1, 3, 768, 768)
    assert len(warnings) == 1 and "512" in warnings[0] and "768" in warnings[0] and "FFHQ" in warnings[0]
    assert -1.0 <= x.min() and x.max() <= 1.0  # bicubic overshoot saturated
    shrunk, warnings = to_model_input(photo, size=256)
    expected = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(from_model_output(shrunk[0]), expected)
    assert "FFHQ" in warnings[0]


def test_model_input_center_crops_a_non_square_image_with_a_warning():
    rgb = np.zeros((40, 100, 3), np.uint8)
    rgb[:, 30:70] = 200  # the central 40x40 square
    x, warnings = to_model_input(rgb, size=40)
    np.testing.assert_array_equal(from_model_output(x[0]), np.full((40, 40, 3), 200, np.uint8))
    assert len(warnings) == 1 and "not square" in warnings[0] and "center-cropped" in warnings[0]
    tall, warnings = to_model_input(rgb.transpose(1, 0, 2), size=20)
    assert tall.shape == (1, 3, 20, 20) and len(warnings) == 2  # cropped, then resized


def test_model_input_round_trips_through_model_output_exactly():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x, _ = to_model_input(rgb, size=64)
    np.testing.assert_array_equal(from_model_output(x[0]), rgb)
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
    batch = np.concatenate([to_model_input(every_level, size=16)[0]] * 2)
    out = from_model_output(batch)
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(out[1], every_level)


def test_model_output_is_clipped_and_rounded():
    x = np.array([-3.0, -1.0, -0.999, 0.0, 0.5, 1.0, 7.0], np.float32).reshape(1, 1, 7).repeat(3, axis=0)
    np.testing.assert_array_equal(from_model_output(x)[0, :, 0], [0, 0, 0, 128, 191, 255, 255])


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.full((3, 2, 2), np.nan, np.float32)],
    ids=["integer", "channels_last", "nan"],
)
def test_model_output_rejects_wrong_layout_and_non_finite_values(bad):
    with pytest.raises(ImageError):
        from_model_output(bad)


def test_write_image_round_trips_and_creates_parent_folders(tmp_path):
    rgb = quadrant_rgb()
    path = write_image(tmp_path / "out" / "deeper" / "result.png", rgb)
    assert path == tmp_path / "out" / "deeper" / "result.png"
    np.testing.assert_array_equal(read_image(path).rgb, rgb)
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.png"]  # no temporary file left
    jpeg = read_image(write_image(tmp_path / "result.jpg", rgb)).rgb
    quadrant_centres = (slice(5, None, 10), slice(7, None, 15))  # away from JPEG's ringing at the edges
    assert np.abs(jpeg[quadrant_centres].astype(int) - rgb[quadrant_centres]).max() < 12  # RGB, not BGR


def test_write_image_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_image(tmp_path / "result.png", quadrant_rgb())
    before = path.read_bytes()
    with pytest.raises(ImageError, match="already exists; pass --overwrite"):
        write_image(path, np.zeros((20, 30, 3), np.uint8))
    assert path.read_bytes() == before
    write_image(path, np.zeros((20, 30, 3), np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_image(path).rgb, 0)


def test_write_image_never_writes_onto_a_protected_input(tmp_path):
    source = write_image(tmp_path / "photos" / "input.png", quadrant_rgb())
    before = source.read_bytes()
    other_spelling = tmp_path / "photos" / ".." / "photos" / "input.png"
    for target in (source, other_spelling):
        with pytest.raises(ImageError, match="refusing to write onto the input"):
            write_image(target, np.zeros((20, 30, 3), np.uint8), overwrite=True, protected=[str(source)])
    assert source.read_bytes() == before


def test_write_image_removes_its_temporary_file_when_the_move_fails(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(images.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "result.png", quadrant_rgb())
    assert list(tmp_path.iterdir()) == []


def test_write_image_rejects_unknown_suffix_and_wrong_pixels(tmp_path):
    with pytest.raises(ImageError, match="cannot write '.xyz' files"):
        write_image(tmp_path / "result.xyz", quadrant_rgb())
    with pytest.raises(ImageError, match="uint8"):
        write_image(tmp_path / "result.png", quadrant_rgb().astype(np.float32))
    assert list(tmp_path.iterdir()) == []


def test_image_and_blend_modules_import_without_torch():
    # A finder that fails every import of torch and of the torch-side packages, as on a machine
    # with only the runtime installed.
    code = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch" or name.startswith(("deghost.training", "deghost.export")):
            raise ImportError(f"{name} is blocked: the runtime must not need it")
        return None
sys.meta_path.insert(0, Blocker())
import deghost.runtime.blend, deghost.runtime.images
assert not any(name.split(".")[0] == "torch" for name in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_file_that_makes_opencv_raise_is_refused_from_its_header_naming_it(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(oversized_png_header())
    with pytest.raises(cv2.error):  # the premise: OpenCV raises for this file rather than returning None
        cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    with pytest.raises(ImageError, match="huge.png is 100000×100000 pixels, more than the 40,000,000"):
        read_image(path)  # a TooLargeError (tests/test_limits.py), before OpenCV sees it
