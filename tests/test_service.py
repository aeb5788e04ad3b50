"""The service's request checks (apps/serve/service.py), without Ray: what a client may send and the
status each mistake gets; the HTTP answer to a photo without a face; concurrent photo uploads sharing
one pipeline batch; and the folder mode's report line for a full disk."""

from __future__ import annotations

import errno
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.apps.edit.folder import write_failure
from deghost.apps.serve.service import (
    MAX_UPLOAD_BYTES,
    WARNINGS_HEADER,
    ClientError,
    EditParams,
    decode_upload,
    edit_many,
    encode_png,
    parse_params,
    warnings_header,
)
from deghost.files import DiskFullError, disk_full_reported
from deghost.runtime.images import read_image
from tests.helpers.tiny_engines import tiny_engines

FACE = Path(__file__).parent / "data" / "images" / "astronaut.png"
GRACE = FACE.with_name("grace_hopper.jpg")
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


class LocalHandle:
    """Stands in for Ray's DeploymentHandle to the replicas: `answer.remote(...)` calls `answer` here, in this
    process (each call takes the next of `answers`, when given, to play a replica that died)."""

    def __init__(self, answer, answers=()):
        self.calls, self._answer, self._answers = 0, answer, list(answers)
        self.answer = self

    def remote(self, *call):
        self.calls += 1
        planned = self._answers.pop(0) if self._answers else None
        if isinstance(planned, BaseException):
            async def died():
                raise planned
            return died()
        return self._answer(*call)


@pytest.fixture(scope="module")
def photo_service(request):
    """The Serve deployment's class (one replica, photo mode) answering HTTP in this process: a starlette
    TestClient over it, as Ray's proxy would call it. Without Ray's batch queue (it needs a running
    replica): each request is its own batch. The tiny untrained engines (DEGHOST_TINY_ENGINES or the
    session's build); their stages are not opened up front, since a photo without a face never reaches them."""
    pytest.importorskip("ray.serve", reason="Ray is an optional extra: pip install 'deghost[ray]'")
    testclient = pytest.importorskip("starlette.testclient", reason="starlette's TestClient needs httpx")
    from starlette.requests import Request

    from deghost.apps.serve.app import EditFront, EditService
    from deghost.runtime.pipeline import Pipeline

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pipeline, "prepare", lambda self, suppress="network": {})
        service = EditService(str(tiny_engines(request)), threads=1, aligned=False)

    async def unbatched(item):
        return (await service._run_batch([item]))[0]

    front = EditFront(LocalHandle(service.answer))

    async def app(scope, receive, send):
        response = await front(Request(scope, receive))
        await response(scope, receive, send)

    service._edit_batch = unbatched
    yield testclient.TestClient(app, base_url="http://127.0.0.1")  # no `with`: this app has no lifespan events
    service.pipe.close()


def test_a_photo_without_a_face_is_a_422_that_says_so(photo_service):
    wall = encode_png(np.full((400, 300, 3), 128, np.uint8))
    answer = photo_service.post("/edit?attribute=smile&alpha=20", content=wall, headers={"content-type": "image/png"})
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/json"
    assert "no face" in answer.json()["error"].lower()


@pytest.fixture(scope="module")
def pipe(request):
    from deghost.runtime.pipeline import Pipeline

    with Pipeline.load(tiny_engines(request), backend="onnxruntime", device="cpu") as pipeline:
        yield pipeline


def test_photo_uploads_share_one_pipeline_batch_and_one_without_a_face_gets_422_alone(pipe, monkeypatch):
    pair = np.hstack([read_image(FACE).rgb, read_image(GRACE).rgb[44:556]])  # two faces
    portrait = read_image(GRACE).rgb  # one face
    wall = np.full((300, 400, 3), 128, np.uint8)  # none
    batches = []

    def counted(images, *args, _run=pipe.run, **kwargs):
        batches.append(len(images))
        return _run(images, *args, **kwargs)

    monkeypatch.setattr(pipe, "run", counted)
    answers = edit_many(pipe, [pair, wall, portrait], EditParams(suppress="none"))
    assert batches == [3]  # both photos' faces in one pipeline batch
    assert isinstance(answers[1], ClientError) and answers[1].status == 422 and "no face" in str(answers[1])
    for photo, answer in ((pair, answers[0]), (portrait, answers[2])):
        alone = pipe.edit_photo(photo, suppress="none").photos["none"][0]
        # Equal to the photo edited on its own, but for rounding: ONNX Runtime's float results for a row
        # depend on its place in the batch by ~1e-6, which can move a pixel across a level boundary.
        difference = np.abs(answer.rgb.astype(int) - alone)
        assert answer.rgb.shape == photo.shape and difference.max() <= 1 and (difference > 0).mean() < 1e-4
        assert answer.warnings == []


def test_aligned_uploads_share_one_batch_and_an_unusable_one_gets_422_alone(pipe, monkeypatch):
    crop = read_image(FACE).rgb  # taken as an aligned crop: resized to the preset's side, not searched for faces
    flat = np.zeros((64, 64), np.uint8)  # no colour channels: no image the models take
    batches = []

    def counted(images, *args, _run=pipe.run, **kwargs):
        batches.append(len(images))
        return _run(images, *args, **kwargs)

    monkeypatch.setattr(pipe, "run", counted)
    answers = edit_many(pipe, [crop, flat, crop], EditParams(suppress="none"), aligned=True)
    assert batches == [2]  # the two crops in one pipeline batch, the unusable upload left out
    assert isinstance(answers[1], ClientError) and answers[1].status == 422 and "RGB uint8" in str(answers[1])
    monkeypatch.undo()
    alone = pipe.edit(crop, suppress="none").rgb()[0]  # the aligned path of the library's own edit
    side = pipe.preset.image_size
    for answer in (answers[0], answers[2]):
        difference = np.abs(answer.rgb.astype(int) - alone)  # batch-position rounding only, as for photos
        assert answer.rgb.shape == (side, side, 3) and difference.max() <= 1 and (difference > 0).mean() < 1e-4
        # a 512² crop for the 256² preset: the client is told it was resized (sent in X-Deghost-Warnings)
        assert any("resized" in w for w in answer.warnings), answer.warnings
        header = warnings_header(answer.warnings)[WARNINGS_HEADER]
        assert header.encode("latin-1") and "resized" in header


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) for a real ENOSPC")
def test_a_full_disk_is_reported_as_such(tmp_path):
    target = tmp_path / "face_smile+20_network.png"
    with pytest.raises(DiskFullError) as raised, disk_full_reported(target, []), open("/dev/full", "wb") as full:
        full.write(b"pixels")
        full.flush()
    message = write_failure(raised.value)
    assert "no space left" in message and target.name in message and "another disk" in message
    assert write_failure(PermissionError(13, "Permission denied")) == "writing failed: [Errno 13] Permission denied"


def test_a_disk_quota_exceeded_is_a_full_disk_too(tmp_path):
    target = tmp_path / "face_smile+20_network.png"
    with pytest.raises(DiskFullError) as raised, disk_full_reported(target, []):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert "no space left" in write_failure(raised.value)


@pytest.mark.parametrize("deaths, status, calls", [(1, 200, 2), (2, 503, 2)])
def test_a_request_whose_replica_died_runs_on_another_or_is_answered_503_with_retry_after(deaths, status, calls):
    """The front's answer when the replica running the request dies (Ray raises ActorDiedError, a RayActorError,
    to the handle's caller; its proxy would answer 500): one retry on another replica, then 503."""
    pytest.importorskip("ray.serve", reason="Ray is an optional extra: pip install 'deghost[ray]'")
    import asyncio

    from ray.exceptions import ActorDiedError

    from deghost.apps.serve.app import RETRY_AFTER_S, EditFront

    async def healthy(*call):
        return 200, "application/json", "{}", None

    handle = LocalHandle(healthy, [ActorDiedError()] * deaths)
    answer = asyncio.run(EditFront(handle, request_timeout_s=30)._forward("health", "GET", {}, b""))
    assert answer[0] == status and handle.calls == calls
    if status == 503:
        assert answer[3] == {"Retry-After": str(RETRY_AFTER_S)} and "unavailable" in answer[2]


def test_a_replica_that_does_not_answer_in_time_is_a_503_not_a_wait():
    pytest.importorskip("ray.serve", reason="Ray is an optional extra: pip install 'deghost[ray]'")
    import asyncio
    import time

    from deghost.apps.serve.app import EditFront

    async def stuck(*call):
        await asyncio.sleep(60)

    started = time.perf_counter()
    answer = asyncio.run(EditFront(LocalHandle(stuck), request_timeout_s=0.2)._forward("edit", "POST", {}, b"x"))
    assert answer[0] == 503 and "within 0.2 s" in answer[2] and time.perf_counter() - started < 30
