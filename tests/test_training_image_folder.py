"""The image folder `deghost train stylegan2`, `psp` and `diffcam` read (training/data.py CheckedImageFolder):
16-bit and grey files converted, unreadable ones skipped and listed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deghost.training.data import CheckedImageFolder, DatasetError
from tests.helpers.bad_files import oversized_png_header


def as_model_input(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H,W,3] → [3,H,W] in [-1,1], the datasets' scale (0 → −1, 255 → 1)."""
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1


def test_16_bit_and_grey_pngs_are_converted_and_corrupt_files_skipped_and_listed(tmp_path):
    # 16-bit: v / 257 rounded (65535 → 255). 257·100 + 129 is 100.502·257, so it reads as 101 (truncating
    # the low byte would give 100). Channels differ, to catch a BGR/RGB swap.
    rgb16 = np.empty((16, 16, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 257 * 100 + 129, 65535, 257 * 7
    cv2.imwrite(str(tmp_path / "a_16bit.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    # Grey and 24×16 (not square): the three channels repeat it, the center 16×16 square (rows 4–19) is kept.
    grey = (10 * np.arange(24)[:, None] + np.arange(16)[None, :]).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "b_grey.png"), grey)
    (tmp_path / "c_corrupt.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "d_oversized.png").write_bytes(oversized_png_header())  # refused from its header, never decoded

    folder = CheckedImageFolder(tmp_path, size=16, progress=False)

    assert [path.name for path in folder.files] == ["a_16bit.png", "b_grey.png"]
    assert [Path(entry["source"]).name for entry in folder.skipped] == ["c_corrupt.png", "d_oversized.png"]
    reasons = {Path(entry["source"]).name: entry["reason"] for entry in folder.skipped}
    assert "could not be decoded" in reasons["c_corrupt.png"] and "resize it first" in reasons["d_oversized.png"]
    expected_16bit = np.broadcast_to(np.array([101, 255, 7], np.uint8), (16, 16, 3))
    torch.testing.assert_close(folder[0], as_model_input(expected_16bit))
    expected_grey = np.repeat(grey[4:20, :, None], 3, axis=2)
    torch.testing.assert_close(folder[1], as_model_input(expected_grey))


def test_a_folder_with_only_unreadable_files_is_refused_with_the_count(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="no readable images.*1 files could not be read"):
        CheckedImageFolder(tmp_path, size=16, progress=False)
