"""The limits on one input, for every front end and for tools that embed the runtime: one source.

Each limit bounds the cost of one input before it is paid: bytes before they are read, pixels before
they are decoded (from the file's header; see image_header.py), faces before they are edited. The
refusals carry the numbers (`TooLargeError.amount`, `.limit`), so each front end words them for where
they are shown (apps/refusals.py); `str()` is the library's own wording, in the Python API's terms.

Importing this module caps OpenCV's decoders at MAX_PIXELS too: OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS
once, into a static of its imgcodecs module (loadsave.cpp, `static const size_t CV_IO_MAX_IMAGE_PIXELS =
getConfigurationParameterSizeT(...)`), i.e. when cv2 is first imported; each decoder then refuses a
header above it before allocating (validateInputImageSize, a cv::Exception). So the cap holds only when
this module is imported before cv2 (the deghost package's __init__ does that); a header our reader and
OpenCV's decoder read differently (a file that lies) is still refused.
"""

from __future__ import annotations

import logging
import os
import sys

MAX_PIXELS = 40_000_000  # decoded pixels of one image (a 2.6 MB PNG can claim 900 megapixels)
MAX_UPLOAD_BYTES = 16 * 2**20  # one uploaded photo, even a large JPEG or PNG; more is a mistake or an attack
# A file on disk: the largest an image within MAX_PIXELS can honestly be (16-bit RGBA, uncompressed: 8 bytes
# a pixel) plus room for metadata; anything larger is refused before it is read into memory.
MAX_FILE_BYTES = 8 * MAX_PIXELS + 16 * 2**20
MAX_ALPHA = 100.0  # |α| beyond this leaves the latent space StyleGAN2 renders faces from
MAX_FACES = 16  # faces edited in one photo (the largest ones); each is one more pass of every stage
# The face search's smallest face, relative to the photo's long side: faces below it are not searched for,
# so a huge photo is searched on a reduced copy (its finest level's long side is at most
# FACE_IN_INPUT / MIN_FACE_FRACTION = 2000 px) and the search costs at most a fixed number of detector runs.
MIN_FACE_FRACTION = 1 / 100

OPENCV_PIXELS_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
log = logging.getLogger(__name__)


class LimitError(ValueError):
    """An input over one of the limits: `what` (pixels, bytes, faces, alpha), `amount` and `limit`."""

    def __init__(self, message: str, what: str, amount: float | None, limit: float):
        super().__init__(message)
        self.what, self.amount, self.limit = what, amount, limit


def cap_opencv_decoders() -> bool:
    """Set OpenCV's pixel cap to MAX_PIXELS (or keep a smaller one already set) → True when it takes
    effect, False when cv2 was imported before (OpenCV has read the variable already)."""
    current = os.environ.get(OPENCV_PIXELS_VARIABLE, "")
    if not (current.isdigit() and int(current) <= MAX_PIXELS):
        os.environ[OPENCV_PIXELS_VARIABLE] = str(MAX_PIXELS)
    if "cv2" in sys.modules:
        log.warning("cv2 was imported before deghost: OpenCV's decoders are not capped at %s pixels "
                    "(the header check still is); import deghost first", f"{MAX_PIXELS:,}")
        return False
    return True


DECODERS_CAPPED = cap_opencv_decoders()
