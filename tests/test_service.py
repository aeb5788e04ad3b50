"""The service's request checks (runtime/service.py), without Ray: what a client may send and the
status each mistake gets; and the folder mode's report line for a full disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.runtime.folder import write_failure
from deghost.runtime.images import read_image
from deghost.runtime.service import MAX_UPLOAD_BYTES, ClientError, EditParams, decode_upload, parse_params

FACE = Path(__file__).parent / "data" / "images" / "astronaut.png"
ATTRIBUTES = ["age", "smile"]


def test_an_upload_decodes_to_the_same_pixels_as_the_file():
    assert np.array_equal(decode_upload(FACE.read_bytes()), read_image(FACE).rgb)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(read_image(FACE).rgb, cv2.COLOR_RGB2BGR))
    assert decode_upload(jpeg.tobytes()).shape == read_image(FACE).rgb.shape


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"", 400, "no image"),
    (b"GIF89a but not really", 400, "could not be decoded"),
    (FACE.read_bytes()[:200], 400, "could not be decoded"),  # truncated PNG
    (b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "more than"),
])
def test_bad_uploads_are_client_errors_with_their_status(data, status, words):
    with pytest.raises(ClientError) as raised:
        decode_upload(data)
    assert raised.value.status == status and words in str(raised.value)


def test_parameters_default_and_parse():
    assert parse_params({}, ATTRIBUTES) == EditParams("smile", 20.0, "network")
    assert parse_params({"attribute": "age", "alpha": "-7.5", "suppress": "eogi"}, ATTRIBUTES) == EditParams(
        "age", -7.5, "eogi")


@pytest.mark.parametrize(("query", "words"), [
    ({"attribute": "moustache"}, "available: age, smile"),
    ({"attribute": "/etc/passwd.npy"}, "unknown attribute"),  # a client never names a server file
    ({"alpha": "lots"}, "must be a number"),
    ({"alpha": "inf"}, "finite"),
    ({"alpha": "1e6"}, "finite number in"),
    ({"suppress": "magic"}, "network, poisson, eogi, none"),
])
def test_bad_parameters_are_400s_that_say_what_is_allowed(query, words):
    with pytest.raises(ClientError) as raised:
        parse_params(query, ATTRIBUTES)
    assert raised.value.status == 400 and words in str(raised.value)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) for a real ENOSPC")
def test_a_full_disk_is_reported_as_such():
    with pytest.raises(OSError) as raised, open("/dev/full", "wb") as full:
        full.write(b"pixels")
        full.flush()
    message = write_failure(raised.value)
    assert "disk is full" in message and "--out" in message
    assert write_failure(PermissionError(13, "Permission denied")) == "writing failed: [Errno 13] Permission denied"
