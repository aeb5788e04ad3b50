"""`deghost serve`: the editing pipeline as an HTTP service on Ray Serve (one Pipeline per replica).

    POST /edit?attribute=smile&alpha=20&suppress=network   body: the image file → image/png
    GET  /health                                          → {"status": "ok", ...}
    GET  /manifest                                        → the engines' summary (service.manifest_summary)

Concurrent /edit requests with the same parameters are gathered by `serve.batch` into one pipeline
batch (the response header X-Deghost-Batch-Size says how many shared it). Client mistakes are 4xx
(service.ClientError); 5xx means the server failed.

Who answers 503, with what:
- a replica, past `queue_limit` edits admitted at once: JSON {"error": "busy: …"}, Retry-After RETRY_AFTER_S;
- Ray's proxy, when QUEUED_PER_ADMITTED × `queue_limit` requests already wait in it for a slot on a replica
  (a burst faster than the replicas turn requests away): text "Request dropped due to backpressure …",
  Retry-After RETRY_AFTER_S (deployment_options; Ray before 2.58 cannot add it and sends none);
- Ray's proxy, when the deployment has no replica that can run (it failed to deploy, or is being deleted):
  text "… is unavailable because it failed to deploy.", no Retry-After: an outage, not load;
- the front (`EditFront`), when the replica running a request died (its process killed, out of memory) and a
  retry on a live replica (FORWARD_TRIES in all) died too, or no replica answered within `request_timeout_s`:
  JSON {"error": "unavailable: …"}, Retry-After RETRY_AFTER_S. Ray's proxy would answer such a request 500
  (http_util.get_http_response_status: RayActorError → 500), so HTTP meets a thin front deployment that
  calls the replicas through a handle and never the replicas themselves. An edit has no side effects:
  running it again on another replica is safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from deghost.runtime.pipeline import Pipeline
from deghost.runtime.ray_cluster import LOCAL_HOST, require_ray

from .service import (
    MAX_UPLOAD_BYTES,
    ClientError,
    EditParams,
    decode_upload,
    edit_many,
    encode_png,
    manifest_summary,
    parse_params,
    too_large_message,
    warnings_header,
)

APP_NAME = "deghost"
DEFAULT_PORT = 8000
DEFAULT_MAX_BATCH = 4  # requests gathered into one pipeline batch
DEFAULT_QUEUE = 16  # edits one replica admits at once; more are turned away with 503 + Retry-After
BATCH_WAIT_S = 0.05  # how long a request waits for others to share its batch
RETRY_AFTER_S = 1  # what a client told 503 should wait before retrying (the replica's and the proxy's 503)
BATCH_HEADER = "X-Deghost-Batch-Size"
ROOM_BESIDE_EDITS = 4  # requests a replica takes beyond its admitted edits: /health, and edits it turns away
QUEUED_PER_ADMITTED = 4  # the proxy's bound on waiting requests, per admitted edit
FORWARD_TRIES = 2  # a request whose replica died runs once more, on another replica
REQUEST_TIMEOUT_S = 120.0  # the longest the front waits for a replica's answer (per try); then 503

log = logging.getLogger(__name__)


class EditService:
    """One replica: one opened Pipeline; /edit requests batched into it (see the module docstring).

    A plain class, made a Serve deployment by `start_service`, so this module imports without Ray.
    """

    def __init__(self, engines: str, backend: str = "auto", threads: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, queue_limit: int = DEFAULT_QUEUE, aligned: bool = False,
                 precision: str | None = None, device: str = "auto"):
        self.pipe = Pipeline.load(engines, backend=backend, threads=threads, precision=precision, device=device)
        self.pipe.prepare("network")  # the default mode's stages open now; others on first use
        self.summary = manifest_summary(self.pipe)
        self.queue_limit, self.aligned = queue_limit, aligned
        self.admitted = 0  # /edit requests in this replica now (waiting for a batch or running)
        self.batch_sizes: Counter[int] = Counter()
        from ray import serve

        self._edit_batch = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=BATCH_WAIT_S)(self._run_batch)

    async def answer(self, route: str, method: str, query: dict, body: bytes) -> tuple:
        """One request, as `EditFront` passes it → (status, media type, body, headers)."""
        if method == "GET" and route == "health":
            # pid: which replica process answered (operators match it to logs and process lists)
            return _json(200, {"status": "ok", "in_flight": self.admitted, "batch_sizes": dict(self.batch_sizes),
                               "pid": os.getpid()})
        if method == "GET" and route == "manifest":
            return _json(200, self.summary)
        if route == "edit":
            if method != "POST":
                return _json(405, {"error": "POST the image file to /edit"})
            return await self._edit(query, body)
        return _json(404, {"error": f"no endpoint /{route}; use POST /edit, GET /health or GET /manifest"})

    async def _edit(self, query: dict, body: bytes) -> tuple:
        if self.admitted >= self.queue_limit:
            return _json(503, {"error": f"busy: {self.admitted} edits in progress; retry after {RETRY_AFTER_S} s"},
                         {"Retry-After": str(RETRY_AFTER_S)})
        self.admitted += 1
        try:
            params = parse_params(query, self.pipe.attributes)
            rgb = decode_upload(body)
            edited, batch = await self._edit_batch((rgb, params))
            if isinstance(edited, ClientError):
                raise edited
            return 200, "image/png", encode_png(edited.rgb), {BATCH_HEADER: str(batch),
                                                               **warnings_header(edited.warnings)}
        except ClientError as error:
            return _json(error.status, {"error": str(error)})
        finally:
            self.admitted -= 1

    async def _run_batch(self, requests: list[tuple]) -> list[tuple]:
        """(rgb, params) per request → (Edited or ClientError, batch size); equal params share a run."""
        groups: dict[EditParams, list[int]] = {}
        for i, (_, params) in enumerate(requests):
            groups.setdefault(params, []).append(i)
        answers: list[tuple] = [None] * len(requests)
        for params, members in groups.items():
            photos = [requests[i][0] for i in members]
            # the pipeline runs in a thread: the replica keeps answering /health and turning requests away
            edited = await asyncio.to_thread(edit_many, self.pipe, photos, params, self.aligned)
            self.batch_sizes[len(members)] += 1
            for i, result in zip(members, edited, strict=True):
                answers[i] = (result, len(members))
        return answers


class EditFront:
    """What HTTP meets: reads the upload (413 past MAX_UPLOAD_BYTES before reading on), hands it to an
    `EditService` replica through a handle and turns a dead replica into a retry or a 503 (module docstring)."""

    def __init__(self, service, request_timeout_s: float = REQUEST_TIMEOUT_S):
        self.service, self.request_timeout_s = service, request_timeout_s

    async def __call__(self, request):  # starlette Request → Response
        from starlette.requests import ClientDisconnect

        route = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            body = await _read_body(request) if request.method == "POST" and route == "edit" else b""
        except ClientError as error:
            return _response(*_json(error.status, {"error": str(error)}))
        except ClientDisconnect:  # gone mid-upload: nothing reaches a replica, nobody reads an answer
            return _response(*_json(499, {"error": "the client disconnected during the upload"}))
        return _response(*await self._forward(route, request.method, dict(request.query_params), body))

    async def _forward(self, *call) -> tuple:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError

        for _ in range(FORWARD_TRIES):
            try:
                return await asyncio.wait_for(self.service.answer.remote(*call), self.request_timeout_s)
            except RayActorError as error:  # ActorDiedError, ActorUnavailableError: the replica went away
                log.warning("a replica died with a request (%s); %s", type(error).__name__,
                            "trying another" if _ < FORWARD_TRIES - 1 else "answering 503")
            except BackPressureError:
                return _unavailable("busy: every replica's queue is full")
            except TimeoutError:
                return _unavailable(f"no replica answered within {self.request_timeout_s:g} s")
        return _unavailable("the replica running the request stopped")


def _unavailable(why: str) -> tuple:
    return _json(503, {"error": f"unavailable: {why}; retry after {RETRY_AFTER_S} s"},
                 {"Retry-After": str(RETRY_AFTER_S)})


async def _read_body(request) -> bytes:
    """The upload: the raw body, or the `image` field of a multipart form; 413 past MAX_UPLOAD_BYTES."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 64 * 1024:
        raise ClientError(too_large_message(int(declared)), status=413)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ClientError("the form has no file field named 'image'; send it as image=@face.png", status=400)
        return await upload.read()
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise ClientError(too_large_message(len(data)), status=413)
    return bytes(data)


def _json(status: int, payload: dict, headers: dict | None = None) -> tuple:
    return status, "application/json", json.dumps(payload), headers


def _response(status: int, media_type: str, body: bytes | str, headers: dict | None = None):
    from starlette.responses import Response

    return Response(body, status_code=status, media_type=media_type, headers=headers)


def start_service(engines: str | Path, replicas: int = 1, host: str = LOCAL_HOST, port: int = DEFAULT_PORT,
                  backend: str = "auto", threads: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                  queue_limit: int = DEFAULT_QUEUE,
                  aligned: bool = False, cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0,
                  app_name: str = APP_NAME, route_prefix: str = "/", precision: str | None = None,
                  device: str = "auto", request_timeout_s: float = REQUEST_TIMEOUT_S) -> str:
    """Deploy the service on the connected Ray cluster → the server's base URL (the app answers under
    `route_prefix`). Stop it with `serve.shutdown()`. HTTP meets one `EditFront` (no CPU reserved: it only
    reads uploads and waits), which bounds the whole service as the replicas bound themselves."""
    require_ray("deghost serve")
    from ray import serve

    Pipeline.load(engines)  # a missing or broken manifest fails here, with its message, not in a replica
    serve.start(http_options={"host": host, "port": port})
    service = serve.deployment(EditService).options(
        **deployment_options(replicas, queue_limit, cpus_per_replica, gpus_per_replica))
    front = serve.deployment(EditFront).options(**deployment_options(1, replicas * queue_limit, 0, 0))
    bound = service.bind(str(engines), backend, threads, max_batch, queue_limit, aligned, precision, device)
    serve.run(front.bind(bound, request_timeout_s), name=app_name, route_prefix=route_prefix)
    return f"http://{host}:{port}"


def deployment_options(replicas: int, queue_limit: int, cpus_per_replica: float, gpus_per_replica: float) -> dict:
    """Ray Serve's options for the deployment: its bounds (see the module docstring) and, where Ray has
    BackpressureConfig (2.58 and later), Retry-After on the 503s its proxy answers past them."""
    options = {
        "num_replicas": replicas,
        "max_ongoing_requests": queue_limit + ROOM_BESIDE_EDITS,
        "max_queued_requests": QUEUED_PER_ADMITTED * queue_limit,
        "ray_actor_options": {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
    }
    try:
        from ray.serve.config import BackpressureConfig
    except ImportError:
        import ray

        log.warning("Ray %s answers requests past the deployment's queue with 503 and no Retry-After; Ray 2.58 "
                    "and later add it: pip install -U 'ray[serve]>=2.58'", ray.__version__)
        return options
    return {**options, "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S)}


def wait_until_interrupted(poll_s: float = 1.0) -> None:
    try:
        while True:
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
