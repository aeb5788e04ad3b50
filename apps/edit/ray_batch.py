"""`deghost edit --ray`: the folder mode on a Ray cluster (Ray Data), for collections beyond one machine.

The driver takes the same FolderRun and plans exactly as the local folder mode does (same output names,
skip-existing rule and name-clash check, folder.plan), turns the jobs into a Ray dataset and maps it through a pool of
actors, each holding one opened Pipeline (one per GPU on a GPU cluster; on CPU the chosen number,
with the cores split between them). Each actor decodes, edits and writes its batches with folder.py's
own functions, so the files equal the local mode's byte for byte, and returns one small report per
batch; the driver sums them into the same FolderReport, summary and exit code.

Failures: a file that cannot be read or a batch that fails is reported, the rest goes on. An actor
that dies is restarted and its batch re-run by Ray (MAX_RESTARTS, MAX_TASK_RETRIES). Outputs are
written atomically (temporary name, then rename); an output that the lost attempt had already
written (it exists and is newer than the job's start) is counted, not written again, and the
temporary files a killed writer leaves behind are removed when the job ends.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deghost.files import temporary_target
from deghost.manifest import Manifest
from deghost.runtime.backends import BackendError
from deghost.runtime.images import ImageError
from deghost.runtime.pipeline import Pipeline
from deghost.runtime.ray_cluster import MAX_RESTARTS, MAX_TASK_RETRIES, RayJobError, connected

from .folder import (
    FolderReport,
    FolderRun,
    Job,
    decode,
    decode_failure,
    plan,
    process_batch,
    record_failure,
    write_failure,
    write_outputs,
)

CORES_PER_CPU_WORKER = 4  # default CPU pool: one actor per this many cores (ONNX Runtime scales ~this far)


def profile_batch(manifest: Manifest) -> int | None:
    """The batch the TensorRT engines were optimised for (the encoder profile's `opt`), if any."""
    for artifact in manifest.artifacts:
        if artifact.stage == "encoder" and artifact.kind == "tensorrt" and artifact.inputs:
            profile = artifact.inputs[0].profile
            if profile:
                return int(profile[1][0])
    return None


class EditActor:
    """One Ray actor: one opened Pipeline; each call decodes, edits and writes one batch of jobs."""

    def __init__(self, engines: str, run: FolderRun, started_ns: int, backend: str = "auto",
                 threads: int | None = None, precision: str | None = None, device: str = "auto"):
        self.pipe = Pipeline.load(engines, backend=backend, threads=threads, precision=precision, device=device)
        self.run, self.started_ns = run, started_ns
        self.edits = run.edits(self.pipe)
        self.backends = self.pipe.prepare(run.modes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        report = FolderReport()
        jobs = [Job(Path(source), {(k, kind): Path(path) for k, kind, path in json.loads(outputs)})
                for source, outputs in zip(batch["source"], batch["outputs"], strict=True)]
        ready = []
        for job in jobs:
            try:
                report.io_ms["decode"] += decode(job, self.pipe, self.run.face_options)
                ready.append(job)
            except Exception as error:  # whatever goes wrong with one file, only that file fails (as locally)
                record_failure(report, job.source, decode_failure(error), None)
        if ready:
            self._edit_and_write(ready, report)
        return {"inputs": [len(jobs)], "report": [json.dumps(_to_dict(report, self.backends))]}

    def _edit_and_write(self, ready: list[Job], report: FolderReport) -> None:
        try:
            result = process_batch(self.pipe, ready, self.edits, self.run.modes)
        except (BackendError, ImageError) as error:
            for job in ready:
                record_failure(report, job.source, f"inference failed: {error}", None)
            return
        report.timings_ms = dict(result.timings_ms)
        report.processed = len(ready)
        first = 0
        for job in ready:
            rows, job.crops.tensor = job.crops.rows, None
            done = {key: path for key, path in job.outputs.items() if self._written_by_this_job(path)}
            job.outputs = {key: path for key, path in job.outputs.items() if key not in done}
            report.written += len(done)
            try:
                count, ms = write_outputs(self.pipe, job, result, first, self.run)
                report.written += count
                report.io_ms["encode"] += ms
            except Exception as error:  # pasting or writing one photo fails that photo alone (as locally)
                record_failure(report, job.source, write_failure(error), None)
            first += rows

    def _written_by_this_job(self, path: Path) -> bool:
        """An earlier attempt of this batch (on an actor that then died) already wrote `path`."""
        try:
            return path.stat().st_mtime_ns >= self.started_ns
        except OSError:
            return False


def run_folder_ray(
    engines: str | Path,
    run: FolderRun,
    ray_workers: int | None = None,
    threads: int | None = None,
    backend: str = "auto",
    address: str | None = None,
    progress: bool = True,
    actor_class: type = EditActor,
    precision: str | None = None,
    device: str = "auto",
) -> tuple[FolderReport, dict[str, str]]:
    """`run` on Ray (module docstring) → (report, the actors' backends as Pipeline.describe()).

    `ray_workers`: actors (default: one per GPU, else one per CORES_PER_CPU_WORKER cores); `threads`:
    ONNX Runtime threads per actor (default: the cores split between the actors); `address`: the
    cluster to join (default: start a local one). Configuration errors raise before Ray starts.
    """
    pipe = Pipeline.load(engines, backend=backend)  # no backend opened here: the actors open theirs
    report = FolderReport(untrained=pipe.untrained)
    jobs = plan(run, run.edits(pipe), report)
    backends: dict[str, str] = {}
    if not jobs:
        return report, backends
    run.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with connected(address) as ray:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        use_gpus = gpus > 0
        workers = ray_workers or (gpus if use_gpus else max(1, cpus // CORES_PER_CPU_WORKER))
        cpus_each = 1 if use_gpus else cpus / workers
        threads = threads or max(1, math.floor(cpus_each))
        batch = run.batch
        if use_gpus and batch == 1:
            batch = profile_batch(pipe.manifest) or batch
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours below counts images
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        rows = [{"source": str(job.source),
                 "outputs": json.dumps([[k, kind, str(path)] for (k, kind), path in job.outputs.items()])}
                for job in jobs]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers)))
        results = dataset.map_batches(
            actor_class, batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_each, num_gpus=1 if use_gpus else 0,
            fn_constructor_kwargs=dict(engines=str(engines), run=run, started_ns=time.time_ns(), backend=backend,
                                       threads=threads, precision=precision, device=device),
            max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES,
        )
        with tqdm(total=len(jobs), unit="img", desc="deghost edit --ray", disable=not progress) as bar:
            try:
                for row in results.iter_rows():
                    backends = _merge(report, json.loads(row["report"])) or backends
                    bar.update(int(row["inputs"]))
            except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as error:  # outputs so far stay
                _remove_temporaries(jobs)
                raise RayJobError(f"the Ray job stopped after {report.processed} image(s): "
                                  f"{_cause(error)}") from error
    _remove_temporaries(jobs)
    order = {path: i for i, path in enumerate(run.inputs)}
    report.failed.sort(key=lambda failure: order.get(failure[0], len(order)))
    report.elapsed_s = time.perf_counter() - started
    return report, backends


def _cause(error: Exception) -> str:
    """Ray's errors carry the remote traceback; the last line of it names the cause."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _to_dict(report: FolderReport, backends: dict[str, str]) -> dict:
    return {"processed": report.processed, "written": report.written, "timings_ms": report.timings_ms,
            "io_ms": report.io_ms, "failed": [[str(s), m] for s, m in report.failed], "backends": backends}


def _merge(report: FolderReport, part: dict) -> dict[str, str]:
    """Add one batch's report to the job's; → that batch's backends."""
    report.processed += part["processed"]
    report.written += part["written"]
    report.failed += [(Path(s), m) for s, m in part["failed"]]
    for total, add in ((report.timings_ms, part["timings_ms"]), (report.io_ms, part["io_ms"])):
        for name, ms in add.items():
            total[name] = total.get(name, 0.0) + ms
    return part["backends"]


def _remove_temporaries(jobs: Sequence[Job]) -> None:
    """Delete the temporary files a killed writer left (deghost.files.atomic_write's temporary_path)."""
    outputs = {path for job in jobs for path in job.outputs.values()}
    for folder in {path.parent for path in outputs}:
        for stray in folder.iterdir():
            if temporary_target(stray) in outputs:
                stray.unlink(missing_ok=True)
