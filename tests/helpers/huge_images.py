"""Image files that claim huge sizes in a few KB or MB, made without ever holding their pixels.

`black_png(w, h)` is a real, complete PNG (decodable, checksums right) of w×h black pixels: its
rows compress to the same deflate block after each full flush, so the block is made once and repeated.
`jpeg_claiming(w, h)` is a small real JPEG whose frame header is rewritten to claim w×h.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

_ADLER_MOD = 65521


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(width: int, height: int, rows_per_block: int = 100) -> bytes:
    """An RGB 8-bit PNG of width×height zeros (filter byte 0 per row), height a multiple of rows_per_block."""
    assert height % rows_per_block == 0
    block = b"\0" * ((1 + 3 * width) * rows_per_block)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib wrapper is written here
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)  # no history after a full flush
    last = deflate.flush(zlib.Z_FINISH)
    total = len(block) * (height // rows_per_block)
    adler = ((total % _ADLER_MOD) << 16) | 1  # of zeros only: a stays 1, b counts the bytes
    idat = b"\x78\x01" + first + repeated * (height // rows_per_block - 1) + last + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def small_jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    return encoded.tobytes()


def jpeg_claiming(width: int, height: int, junk_before_frame: bytes = b"") -> bytes:
    """A 16×16 JPEG whose SOF0 header says width×height. `junk_before_frame` is inserted just before the
    frame header: libjpeg skips such bytes (with a warning), a strict marker walk cannot."""
    data = small_jpeg()
    sof = data.index(b"\xff\xc0")
    patched = data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]
    return patched[:sof] + junk_before_frame + patched[sof:]
