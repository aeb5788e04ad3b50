"""`deghost edit clip.mp4 --ray`: a long clip's chunks (deghost.runtime.video.chunks) edited by a pool
of Ray Data actors, one opened Pipeline each, then joined on the driver. The faces are tracked once on
the driver; each actor edits whole chunks with their smoothing margins and writes lossless segments,
so the joined clip equals the one-stream run's; segments already written (a killed run) are skipped."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deghost.runtime.pipeline import Pipeline
from deghost.runtime.ray_cluster import RayJobError
from deghost.runtime.video.chunks import Chunk, edit_chunk, load_tracks, segment_paths

from .ray_batch import CORES_PER_CPU_WORKER, MAX_RESTARTS, MAX_TASK_RETRIES, _cause


class ChunkActor:
    """One Ray actor: one opened Pipeline; each call edits one chunk into its segments."""

    def __init__(self, engines: str, backend: str, threads: int | None, precision: str | None, device: str,
                 tracks_file: str, work: str, source: str, options: dict):
        self.pipe = Pipeline.load(engines, backend=backend, threads=threads, precision=precision, device=device)
        self.tracks = load_tracks(Path(tracks_file))
        self.work, self.source, self.options = Path(work), source, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        for row in zip(*(batch[key] for key in ("number", "start", "stop", "lo", "hi")), strict=True):
            edit_chunk(self.pipe, self.source, self.tracks, Chunk(*map(int, row)), self.work, **self.options)
        return {"done": [len(batch["number"])]}


def ray_chunk_runner(ray, engines: str | Path, source: str | Path, options: dict, backend: str = "auto",
                     threads: int | None = None, precision: str | None = None, device: str = "auto",
                     ray_workers: int | None = None) -> Callable:
    """run_chunks(tracks_file, chunks, work) for `edit_clip_in_chunks`, on the connected Ray cluster `ray`."""

    def run(tracks_file: Path, chunks: list[Chunk], work: Path) -> None:
        n_edits = len(Pipeline.load(engines).edits(options.get("attribute", "smile"), options.get("alpha", 20.0),
                                                   options.get("class_index")))
        todo = [c for c in chunks if not all(p.exists() for p in segment_paths(work, c, n_edits))]
        if not todo:
            return
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = min(len(todo), ray_workers or max(1, cpus // CORES_PER_CPU_WORKER))
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        rows = [{"number": c.number, "start": c.start, "stop": c.stop, "lo": c.lo, "hi": c.hi} for c in todo]
        results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ChunkActor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus / workers, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES,
            fn_constructor_kwargs=dict(engines=str(engines), backend=backend,
                                       threads=threads or max(1, math.floor(cpus / workers)), precision=precision,
                                       device=device, tracks_file=str(tracks_file), work=str(work),
                                       source=str(source), options=options),
        )
        try:
            results.take_all()
        except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as error:  # segments so far stay
            raise RayJobError(f"the Ray job stopped ({_cause(error)}); run the command again to resume from the "
                              "chunks written") from error

    return run
