"""Image files in and out of the runtime, and the conversion to and from the models' tensors (torch-free).

Everything past this module is RGB: OpenCV's BGR is turned into RGB once when reading and back
once when writing. Pixels are uint8 [H,W,3] outside the models and float32 [B,3,H,W] in [-1,1]
inside them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deghost.files import atomic_write_bytes

from .image_header import header_size
from .limits import MAX_FILE_BYTES, MAX_PIXELS, LimitError

MODEL_SIZE = 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # what folders are searched for


def image_files(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files (or files of other `suffixes`) directly inside `folder`, by name (any case; hidden files
    skipped)."""
    suffixes = tuple(suffixes)
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in suffixes and not path.name.startswith(".") and path.is_file())


_JPEG_MAGIC = b"\xff\xd8\xff"


class ImageError(ValueError):
    """An image file that cannot be read or written, or pixels of the wrong shape or type."""


class TooLargeError(ImageError, LimitError):
    """An image over MAX_PIXELS (`what` "pixels", `size` (width, height) when the header said it) or a
    file over MAX_FILE_BYTES (`what` "bytes"), refused before its pixels are decoded."""

    def __init__(self, message: str, what: str, amount: int | None, limit: int,
                 size: tuple[int, int] | None = None):
        LimitError.__init__(self, message, what, amount, limit)
        self.size = size


@dataclass
class LoadedImage:
    """A decoded image: `rgb` uint8 [H,W,3], upright (EXIF orientation applied), alpha dropped.

    `warnings` lists what was changed on the way in (grayscale expanded, alpha dropped, 16-bit
    scaled) so the caller can report it next to the result.
    """

    rgb: np.ndarray
    path: Path
    warnings: list[str] = field(default_factory=list)


def read_image(path: str | Path) -> LoadedImage:
    """Read an image file as upright RGB uint8 [H,W,3].

    - EXIF orientation is applied to JPEGs, where cameras and phones write it; other formats are
      taken as stored.
    - 16-bit samples are scaled to 8 bits with rounding (v / 257, so 65535 → 255).
    - Grayscale is repeated into three channels; an alpha channel is ignored (dropped, not
      composited). Each of these adds a line to `warnings`.

    Non-ASCII paths work: the bytes are read by numpy and decoded by OpenCV from memory.
    Raises ImageError for a missing file, a directory, an empty or undecodable file (also when
    OpenCV raises cv2.error instead of returning nothing) and an unsupported sample type or channel count;
    TooLargeError (an ImageError) for a file over MAX_FILE_BYTES, before it is read, or an image over
    MAX_PIXELS, before it is decoded.
    """
    path = Path(path)
    return decode_image(_read_bytes(path), path)


def decode_image(data: np.ndarray, path: str | Path) -> LoadedImage:
    """`read_image` on bytes already in memory (uint8 [N], N > 0), e.g. an upload; `path` names it in messages."""
    path = Path(path)
    check_pixels(data, path)
    # IMREAD_UNCHANGED keeps 16-bit samples and alpha (so we can warn) but ignores EXIF
    # orientation. A JPEG has no alpha, and it is where orientation tags live, so JPEGs are decoded
    # with ANYDEPTH|ANYCOLOR instead, the flags under which OpenCV applies the orientation itself.
    is_jpeg = data[: len(_JPEG_MAGIC)].tobytes() == _JPEG_MAGIC
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if is_jpeg else cv2.IMREAD_UNCHANGED
    try:
        decoded = cv2.imdecode(data, flags)
        refusal = ""
    except cv2.error as error:  # some headers (e.g. more pixels than OpenCV allows) raise instead of None
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):  # the decoder's cap (limits.py): a header that lied to ours
            raise TooLargeError(_too_many_pixels(path, None), "pixels", None, MAX_PIXELS) from None
        decoded, refusal = None, f" (OpenCV: {str(error).strip().splitlines()[-1]})"
    if decoded is None or decoded.size == 0:
        raise ImageError(
            f"{path} could not be decoded{refusal}: the file is corrupt, truncated, too large, or not an image "
            "format OpenCV reads (PNG, JPEG, WebP, BMP, TIFF); re-save it as PNG or JPEG"
        )
    warnings: list[str] = []
    try:
        pixels = _to_uint8(decoded, path, warnings)
        return LoadedImage(rgb=_to_rgb(pixels, path, warnings), path=path, warnings=warnings)
    except cv2.error as error:
        raise ImageError(f"{path} decoded into pixels OpenCV cannot convert ({error}); re-save it as PNG") from error


def check_pixels(data: np.ndarray, path: str | Path) -> None:
    """TooLargeError when the file's header (image_header.header_size) claims more than MAX_PIXELS.
    Reads the header only: the cost does not grow with the size claimed."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise TooLargeError(_too_many_pixels(path, size), "pixels", size[0] * size[1], MAX_PIXELS, size)


def _too_many_pixels(path: str | Path, size: tuple[int, int] | None) -> str:
    claimed = f"is {size[0]}×{size[1]} pixels," if size else "decodes to"
    return f"{path} {claimed} more than the {MAX_PIXELS:,} pixels allowed (MAX_PIXELS); resize it first"


def _read_bytes(path: Path) -> np.ndarray:
    """The file's bytes as uint8 [N], N > 0."""
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file; pass one of the files in it")
    if not path.exists():
        raise ImageError(f"{path} does not exist; check the path")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TooLargeError(f"{path} is {size:,} bytes, more than the {MAX_FILE_BYTES:,} an image within "
                            f"{MAX_PIXELS:,} pixels can be (MAX_FILE_BYTES); resize it first", "bytes", size,
                            MAX_FILE_BYTES)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"{path} could not be read ({error}); check its permissions") from error
    if data.size == 0:
        raise ImageError(f"{path} is empty (0 bytes); the file was not written completely, re-export it")
    return data


def _to_uint8(pixels: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """8-bit samples as they are; 16-bit ones scaled to 8 bits with rounding."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        warnings.append(f"{path.name}: 16-bit image scaled to 8 bits (the models take 8-bit input)")
        # round(v / 257) in integers: 257 is odd, so v / 257 is never exactly halfway.
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageError(
        f"{path} has {pixels.dtype} samples, which are not supported; save it as an 8- or 16-bit PNG or JPEG"
    )


def _to_rgb(pixels: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """OpenCV's gray / BGR / BGRA → RGB uint8 [H,W,3]."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 1:
        warnings.append(f"{path.name}: grayscale image repeated into three RGB channels")
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if channels == 4:
        warnings.append(f"{path.name}: alpha channel ignored (dropped, not composited onto a background)")
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"{path} has {channels} channels; save it as a grayscale, RGB or RGBA image")


def to_model_input(rgb: np.ndarray, size: int = MODEL_SIZE) -> tuple[np.ndarray, list[str]]:
    """RGB uint8 [H,W,3] → (float32 [1,3,size,size] in [-1,1], warnings).

    The models expect FFHQ-aligned faces at `size`². A non-square image is center-cropped to a
    square (not stretched: stretching would distort the face); a square of another side is resized,
    with INTER_AREA when shrinking and INTER_CUBIC when enlarging. Both add a warning, because
    results are only good on faces aligned the FFHQ way.
    """
    check_rgb_uint8(rgb, "to_model_input: rgb")
    warnings: list[str] = []
    height, width = rgb.shape[:2]
    if height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        rgb = rgb[top : top + side, left : left + side]
        warnings.append(
            f"image is {width}x{height}, not square: center-cropped to {side}x{side} at (x={left}, y={top}); "
            "results need FFHQ-aligned faces"
        )
    side = rgb.shape[0]
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        # Resized in uint8, so bicubic overshoot saturates at 0 and 255 instead of leaving [-1, 1].
        rgb = cv2.resize(rgb, (size, size), interpolation=interpolation)
        warnings.append(f"image resized from {side}² to {size}²; results need FFHQ-aligned faces at {size}²")
    tensor = rgb.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(tensor), warnings


def from_model_output(x: np.ndarray) -> np.ndarray:
    """Model image(s) float [3,H,W] or [B,3,H,W] in [-1,1] → RGB uint8 [H,W,3] or [B,H,W,3].

    Values outside [-1, 1] are clipped, then rounded to the nearest 8-bit level.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ImageError(
            f"from_model_output takes float [3,H,W] or [B,3,H,W] in [-1,1]; got {x.dtype} {tuple(x.shape)}"
        )
    if not np.all(np.isfinite(x)):
        raise ImageError("model output contains NaN or Inf; the engine overflowed (compare with FP32)")
    levels = np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(levels, -3, -1))


def write_image(
    path: str | Path, rgb: np.ndarray, overwrite: bool = False, protected: Iterable[str | Path] = ()
) -> Path:
    """Write RGB uint8 [H,W,3] to `path` atomically; the format comes from the suffix. Returns the path.

    The image is encoded in memory, written to a temporary file in the same folder and moved onto
    `path` with os.replace, so `path` never holds a partly written image (the temporary file is
    removed if anything fails). No fsync: this guards against interruption, not power loss.
    An existing file is replaced only with `overwrite=True`, and never when it is one of the
    `protected` files (the inputs), whatever `overwrite` says. Missing parent folders are created.
    """
    path = Path(path)
    check_rgb_uint8(rgb, "write_image: rgb")
    if not cv2.haveImageWriter(str(path)):
        raise ImageError(f"{path}: OpenCV cannot write '{path.suffix}' files; use .png, .jpg, .webp or .bmp")
    if path.is_dir():
        raise ImageError(f"{path} is a directory; give a file name with an image suffix such as .png")
    for input_path in protected:
        if _same_file(path, Path(input_path)):
            raise ImageError(f"refusing to write onto the input {input_path}; choose another output path")
    if path.exists() and not overwrite:
        raise ImageError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
    encoded_ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not encoded_ok:
        raise ImageError(f"OpenCV could not encode a {rgb.shape} image as '{path.suffix}'; try .png")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def _same_file(a: Path, b: Path) -> bool:
    """True when both paths exist and name the same file (through links or other spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_rgb_uint8(rgb: np.ndarray, what: str) -> None:
    """Raise ImageError naming `what` unless `rgb` is an RGB uint8 [H,W,3] array."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        described = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ImageError(
            f"{what} must be RGB uint8 [H,W,3] (as read_image and from_model_output return); got {described}"
        )
