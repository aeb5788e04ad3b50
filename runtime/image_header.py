"""An image file's size from its header alone (PNG, JPEG, WebP, BMP, TIFF), before any pixel is decoded.

`header_size(data)` reads a few dozen bytes (a JPEG: its markers up to the frame header, skipping each
segment by its length), so its cost does not grow with the size the file claims. The size is the
upright one: a JPEG's or TIFF's EXIF orientation 5-8 (a quarter turn) swaps width and height, as
OpenCV does when it applies the orientation.
"""

from __future__ import annotations

import struct

_PNG = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field
_WIDTH, _HEIGHT, _ORIENTATION = 256, 257, 274  # TIFF / EXIF tags
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that transpose the image
_MAX_IFD_ENTRIES = 4096  # a TIFF directory claiming more is corrupt; bounds the walk
_MAX_JPEG_STEPS = 4096  # markers and fill bytes before the frame header; past it the decoder (and its cap) decide


def header_size(data) -> tuple[int, int] | None:
    """(width, height) upright, from the header of an image file's bytes (bytes, bytearray or uint8
    array); None when the format is not one of these five or the header is cut short or malformed
    (the decoder then decides, under OpenCV's own cap)."""
    head = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    try:
        if head[:8] == _PNG:
            return struct.unpack(">II", head[16:24])  # IHDR is the first chunk
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg(head)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
        if head[:2] == b"BM":
            return _bmp(head)
        if head[:4] in (b"II*\0", b"MM\0*"):
            width, height, orientation = _tiff(head, 0)
            return _upright(width, height, orientation)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg(head: memoryview) -> tuple[int, int] | None:
    at, orientation = 2, 1
    for _ in range(_MAX_JPEG_STEPS):  # a file of fill bytes must not cost a Python step per byte
        if at + 4 > len(head):
            return None
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        length = struct.unpack(">H", head[at + 2 : at + 4])[0]
        if length < 2 or marker == 0xDA:  # start of scan before any frame header: no size to read
            return None
        segment = head[at + 4 : at + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\0\0":
            orientation = _tiff(segment[6:], 0)[2] or 1
        if marker in _SOF:
            height, width = struct.unpack(">HH", segment[1:5])
            return _upright(width, height, orientation)
        at += 2 + length
    return None


def _webp(head: memoryview) -> tuple[int, int] | None:
    chunk = bytes(head[12:16])
    if chunk == b"VP8X":  # extended: 24-bit canvas size minus one
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after the 0x2F signature
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _bmp(head: memoryview) -> tuple[int, int]:
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _tiff(head: memoryview, start: int) -> tuple[int, int, int]:
    """(width, height, orientation; 0 where absent) from the first directory of a TIFF structure
    (a TIFF file, or the EXIF block of a JPEG) starting at `start`."""
    order = "<" if head[start : start + 2] == b"II" else ">"
    ifd = start + struct.unpack(order + "I", head[start + 4 : start + 8])[0]
    count = min(struct.unpack(order + "H", head[ifd : ifd + 2])[0], _MAX_IFD_ENTRIES)
    found = {_WIDTH: 0, _HEIGHT: 0, _ORIENTATION: 0}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack(order + "HH", head[entry : entry + 4])
        if tag in found:  # SHORT (3) or LONG (4), one value, stored in the entry itself
            fmt = "H" if kind == 3 else "I"
            found[tag] = struct.unpack(order + fmt, head[entry + 8 : entry + 8 + struct.calcsize(fmt)])[0]
    return found[_WIDTH], found[_HEIGHT], found[_ORIENTATION]


def _upright(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)
