"""deghost on Ray: `edit --ray` (Ray Data) against the local folder mode, and the Ray Serve service.

One local Ray cluster per session (2 CPUs, loopback only), shut down at the end. Expected files come
from the local folder mode (apps/edit/folder.py, no Ray) and expected images from Pipeline.edit.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from deghost.apps.edit.folder import FolderRun, collect_inputs, run_folder
from deghost.runtime.images import read_image
from deghost.runtime.pipeline import Pipeline
from tests.helpers.tiny_engines import tiny_engines

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'deghost[ray]'")

FACE = Path(__file__).parent / "data" / "images" / "astronaut.png"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Serve's pydantic v1-style fields


@pytest.fixture(scope="session")
def tiny(request) -> Path:
    """Untrained tiny-preset ONNX engines: DEGHOST_TINY_ENGINES if set, else conftest's build."""
    return tiny_engines(request)


@pytest.fixture(scope="session")
def ray_cluster():
    from deghost.runtime.ray_cluster import LOCAL_HOST

    ray.init(_node_ip_address=LOCAL_HOST, include_dashboard=False, num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


def _faces(folder: Path, count: int) -> list[Path]:
    """`count` different 256² face images (the test face, each with its own noise) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.resize(read_image(FACE).rgb, (256, 256), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        noisy = np.clip(base.astype(np.int16) + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"face{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
    return paths


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_ray_data_writes_the_local_folder_modes_files(ray_cluster, tiny, tmp_path):
    from deghost.apps.edit.ray_batch import run_folder_ray

    _faces(tmp_path / "in", 2)
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    inputs = collect_inputs([tmp_path / "in"])
    with Pipeline.load(tiny, threads=1, device="cpu") as pipe:
        local = run_folder(pipe, FolderRun(inputs, tmp_path / "local"), progress=False)
    distributed, backends = run_folder_ray(tiny, FolderRun(inputs, tmp_path / "ray"), ray_workers=2, threads=1,
                                           progress=False, device="cpu")

    assert _files(tmp_path / "ray") == _files(tmp_path / "local")  # byte for byte, same names, no stray files
    assert len(_files(tmp_path / "ray")) == 2
    assert (distributed.processed, distributed.written) == (local.processed, local.written) == (2, 2)
    assert distributed.failed == local.failed and [p.name for p, _ in distributed.failed] == ["corrupt.png"]
    assert "could not be decoded" in distributed.failed[0][1]
    assert set(backends) >= {"encoder", "generator", "diffcam", "suppressor"}

    again, _ = run_folder_ray(tiny, FolderRun(inputs, tmp_path / "ray"), progress=False)  # skip-existing
    assert (again.processed, again.written, sorted(p.name for p in again.kept)) == (0, 0, ["face0.png", "face1.png"])


@pytest.mark.slow  # two actor start-ups and a restart: ~50 s on a busy 2-core machine
def test_a_killed_actor_is_retried_and_every_output_written_once(ray_cluster, tiny, tmp_path):
    from deghost.apps.edit.ray_batch import EditActor, run_folder_ray

    inputs = _faces(tmp_path / "in", 2)
    marker = tmp_path / "crashed"

    class DiesAfterItsFirstBatch(EditActor):
        """Writes its first batch's outputs and a half-written temporary file, then its process dies."""

        def __call__(self, batch):
            if marker.exists():
                return super().__call__(batch)
            marker.touch()
            super().__call__(batch)
            first = Path(json.loads(batch["outputs"][0])[0][2])
            (first.parent / f".{first.name}.deadbeef.tmp").write_bytes(b"half an image")
            os._exit(1)

    report, _ = run_folder_ray(tiny, FolderRun(inputs, tmp_path / "ray"), ray_workers=1, threads=1, progress=False,
                               actor_class=DiesAfterItsFirstBatch, device="cpu")

    assert marker.exists()  # the crash happened
    written = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert written == ["face0_smile+20_network.png", "face1_smile+20_network.png"]  # complete, no temporaries
    assert (report.processed, report.written, report.failed) == (2, 2, [])
    with Pipeline.load(tiny, threads=1, device="cpu") as pipe:
        expected = pipe.edit([read_image(p).rgb for p in inputs]).rgb()
    for path, image in zip(sorted((tmp_path / "ray").iterdir()), expected, strict=True):
        assert np.array_equal(read_image(path).rgb, image)


def test_synthesize_on_ray_makes_the_local_runs_dataset(ray_cluster, tmp_path):
    from deghost.training.data import synthesize_pairs
    from deghost.training.ray_synthesis import synthesize_pairs_ray
    from deghost.training.synthetic import SyntheticGhosting

    _faces(tmp_path / "in" / "a", 2)
    _faces(tmp_path / "in" / "b", 1)
    (tmp_path / "in" / "b" / "broken.png").write_bytes(b"no image here")
    local = synthesize_pairs(tmp_path / "in", tmp_path / "local", SyntheticGhosting(), 64, batch_size=2,
                             progress=False)
    distributed = synthesize_pairs_ray(tmp_path / "in", tmp_path / "ray", "synthetic", size=64, batch_size=2,
                                       workers=2, progress=False)

    assert (distributed.made, len(distributed.skipped)) == (local.made, len(local.skipped)) == (3, 1)
    made = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    for relative in made:  # same pixels, same manifest lines in the same order, same settings
        assert (tmp_path / "ray" / relative).read_bytes() == (tmp_path / "local" / relative).read_bytes(), relative
    again = synthesize_pairs_ray(tmp_path / "in", tmp_path / "ray", "synthetic", size=64, batch_size=2,
                                 progress=False)
    assert (again.made, again.already_done) == (0, 3)


def test_pipeline_pairs_on_ray_run_on_the_backend_and_precision_asked_for(ray_cluster, tiny, tmp_path):
    """OpenVINO bf16 in the actor, one thread: the local run's pairs, byte for byte."""
    from deghost.runtime.pipeline import Pipeline
    from deghost.training.data import PipelineGhosting, synthesize_pairs
    from deghost.training.ray_synthesis import synthesize_pairs_ray

    _faces(tmp_path / "in", 2)
    options = dict(backend="openvino", precision="bf16", device="cpu", threads=1)
    with Pipeline.load(tiny, **options) as pipe:
        local = synthesize_pairs(tmp_path / "in", tmp_path / "local", PipelineGhosting(pipe), pipe.preset.image_size,
                                 progress=False)
    distributed = synthesize_pairs_ray(tmp_path / "in", tmp_path / "ray", "pipeline", engines=tiny, progress=False,
                                       **options)
    assert distributed.made == local.made == 2
    made = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert made and made == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.png"))
    for relative in made:
        assert (tmp_path / "ray" / relative).read_bytes() == (tmp_path / "local" / relative).read_bytes(), relative


@pytest.fixture(scope="module")
def service(ray_cluster, tiny):
    from ray import serve

    from deghost.apps.serve.app import start_service

    # the Ray Data tests above need the cluster's CPUs; the service tests come last and share one replica
    url = start_service(tiny, replicas=1, port=_free_port(), threads=1, max_batch=4, queue_limit=8,
                        cpus_per_replica=0.5, aligned=True, device="cpu")
    yield url
    serve.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, data: bytes | None, timeout: float = 120, method: str = "POST") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_service_batches_concurrent_requests_into_pipeline_edit_results(service, tiny, tmp_path):
    paths = _faces(tmp_path, 4)
    answers: dict[int, tuple] = {}

    def send(i: int) -> None:
        answers[i] = _post(f"{service}/edit?attribute=smile&alpha=20", paths[i].read_bytes())

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert sorted(answers) == [0, 1, 2, 3] and all(a[0] == 200 for a in answers.values()), answers

    with Pipeline.load(tiny, threads=1, device="cpu") as pipe:
        expected = pipe.edit([read_image(p).rgb for p in paths], "smile", 20.0).rgb()
    for i, (_, _, body) in answers.items():
        got = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.array_equal(got, expected[i])
    sizes = [int(a[1]["x-deghost-batch-size"]) for a in answers.values()]
    assert max(sizes) > 1, sizes  # concurrent requests shared a pipeline batch
    health = json.loads(urllib.request.urlopen(f"{service}/health", timeout=30).read())
    assert health["status"] == "ok" and max(map(int, health["batch_sizes"])) > 1


def test_service_answers_client_mistakes_with_4xx(service, tmp_path):
    from deghost.apps.serve.service import MAX_UPLOAD_BYTES

    face = _faces(tmp_path, 1)[0].read_bytes()
    assert _post(f"{service}/edit", b"definitely not an image")[0] == 400
    status, _, body = _post(f"{service}/edit?attribute=moustache", face)
    assert status == 400 and "moustache" in json.loads(body)["error"] and "smile" in json.loads(body)["error"]
    assert _post(f"{service}/edit?alpha=nan", face)[0] == 400
    assert _post(f"{service}/edit?suppress=magic", face)[0] == 400
    assert _post(f"{service}/edit", b"")[0] == 400
    assert _post(f"{service}/edit", b"\0" * (MAX_UPLOAD_BYTES + 1))[0] == 413
    manifest = json.loads(urllib.request.urlopen(f"{service}/manifest", timeout=30).read())
    assert manifest["image_size"] == 256 and "smile" in manifest["attributes"] and manifest["untrained"] is True



def test_a_client_gone_mid_upload_leaves_nothing_running_and_the_service_answering(service):
    import socket
    import time

    host, port = service.rsplit("//", 1)[1].split(":")
    for _ in range(3):  # three uploads cut off after 1 KB of a declared 1 MB
        with socket.create_connection((host, int(port)), timeout=30) as client:
            client.sendall(b"POST /edit HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 1000000\r\n\r\n" + b"\0" * 1024)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the replica's count of edits in flight returns to 0 (never admitted)
        health = json.loads(urllib.request.urlopen(f"{service}/health", timeout=30).read())
        if health["in_flight"] == 0:
            break
        time.sleep(0.5)
    assert health == {**health, "status": "ok", "in_flight": 0}


@pytest.mark.slow
def test_service_turns_a_request_storm_away_with_503_and_retry_after(service, tiny, tmp_path):
    from deghost.apps.serve.app import start_service

    # a second app on the same Serve instance: one edit admitted at a time, no batching
    small = start_service(tiny, port=int(service.rsplit(":", 1)[1]), threads=1, max_batch=1, queue_limit=1,
                          cpus_per_replica=0.5, aligned=True, app_name="deghost-small", route_prefix="/small")
    face = _faces(tmp_path, 1)[0].read_bytes()
    answers = []
    # more than the replica admits (1) plus, in a burst, what Ray's proxy lets wait (4): both may answer 503
    threads = [threading.Thread(target=lambda: answers.append(_post(f"{small}/small/edit", face))) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    statuses = sorted(status for status, _, _ in answers)
    assert len(statuses) == 12 and statuses[0] == 200 and 503 in statuses, statuses
    assert all(int(headers["retry-after"]) >= 1 for status, headers, _ in answers if status == 503)


def test_ray_s_proxy_answers_a_burst_past_the_deployment_s_bounds_with_503_and_retry_after(service):
    """The deployment's bounds from `deployment_options` with queue_limit 1 (5 requests on the replica, 4
    waiting) over a slow stand-in for the replica, so that the proxy itself turns the rest away."""
    from ray import serve

    from deghost.apps.serve.app import RETRY_AFTER_S, deployment_options

    try:
        from ray.serve.config import BackpressureConfig  # noqa: F401
    except ImportError:
        pytest.skip(f"Ray {ray.__version__} sends its own 503 without Retry-After (2.58 adds it)")

    class Slow:
        async def __call__(self, request):
            import asyncio

            await asyncio.sleep(6)  # long enough that the whole burst arrives while the first ones run
            return "done"

    options = deployment_options(replicas=1, queue_limit=1, cpus_per_replica=0.1, gpus_per_replica=0.0)
    serve.run(serve.deployment(Slow).options(**options).bind(), name="deghost-bounds", route_prefix="/bounds")
    answers, burst = [], threading.Barrier(12, timeout=60)  # the 12 posts leave together, even on a busy CPU

    def post() -> None:
        burst.wait()
        answers.append(_post(f"{service}/bounds", b"x"))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    serve.delete("deghost-bounds")
    statuses = sorted(status for status, _, _ in answers)
    assert len(statuses) == 12 and set(statuses) == {200, 503}, statuses  # some served, some turned away
    for headers, body in [(headers, body) for status, headers, body in answers if status == 503]:
        assert b"backpressure" in body and int(headers["retry-after"]) == RETRY_AFTER_S


def test_a_replica_killed_mid_burst_leaves_no_request_answered_500_or_unanswered(service, tiny, tmp_path):
    """SIGKILL one of two replicas' processes while a burst of 16 edits runs: Ray's proxy alone answered every
    request in flight on it 500 (issue 25: 8 of 8); through the front each is retried on the live replica or
    answered 503 with Retry-After, and every request is answered within the client's bound."""
    import time

    from ray import serve

    from deghost.apps.serve.app import start_service

    start_service(tiny, replicas=2, port=int(service.rsplit(":", 1)[1]), threads=1, max_batch=2, queue_limit=8,
                  cpus_per_replica=0.5, aligned=True, app_name="deghost-faults", route_prefix="/faults",
                  request_timeout_s=60)
    face = _faces(tmp_path, 1)[0].read_bytes()
    # The replicas' processes, through /health (each answers with its pid), asked while both are idle: the
    # proxy then sends each request to either (busy, it sends them all to the one less loaded).
    pids: set[int] = set()
    for _ in range(60):  # bounded in count
        status, _, body = _post(f"{service}/faults/health", None, timeout=30, method="GET")
        if status == 200:
            pids.add(json.loads(body)["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2 and os.getpid() not in pids, pids
    answers, burst = [], threading.Barrier(17, timeout=60)

    def post() -> None:
        burst.wait()
        answers.append(_post(f"{service}/faults/edit", face, timeout=150))

    threads = [threading.Thread(target=post) for _ in range(16)]
    for thread in threads:
        thread.start()
    burst.wait()
    time.sleep(1.0)  # the burst is on the replicas (16 edits of ~0.3 s, two at a time per replica)
    os.kill(min(pids), signal.SIGKILL)  # a crash, mid-burst
    for thread in threads:
        thread.join(timeout=200)
    serve.delete("deghost-faults")
    statuses = sorted(status for status, _, _ in answers)
    assert len(statuses) == 16 and set(statuses) <= {200, 503}, statuses
    assert all(int(headers["retry-after"]) >= 1 for status, headers, _ in answers if status == 503)
