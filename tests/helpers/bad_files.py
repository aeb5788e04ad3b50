"""Files that make decoders misbehave, for the every-input-handled tests."""

from __future__ import annotations

import struct
import zlib


def oversized_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims more pixels than OpenCV allows: cv2.imdecode raises cv2.error for it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))

