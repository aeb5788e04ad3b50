"""Folder mode: many image files through the pipeline, decoding and encoding overlapped with inference.

A small thread pool decodes the next images while the current batch runs (OpenCV and the backends
release the GIL), and encodes and writes the results while the next batch runs. A file that cannot
be read, or whose batch fails, is reported and skipped; the run goes on. Outputs are written
atomically, never onto an input, and existing outputs are kept unless `overwrite`.

Output names: `<out>/<input stem>_<attribute><alpha>_<suppress>.png` (e.g. `face_smile+20_network.png`),
and with `grid` also `<stem>_<attribute><alpha>_grid.png`.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backends import BackendError
from .directions import DEFAULT_ALPHA
from .grid import FIGURE2_COLUMNS, make_grid
from .images import IMAGE_SUFFIXES, ImageError, from_model_output, read_image, to_model_input, write_image
from .pipeline import UNTRAINED_LABEL, Edit, EditResult, Pipeline

log = logging.getLogger("deghost.runtime")

GRID = "grid"  # the output key of the comparison image


def collect_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files directly inside each folder (sorted; hidden ones skipped).

    A path that does not exist stays in the list, so the run reports it as a failed input.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def output_paths(source: Path, out_dir: Path, edits: Sequence[Edit], suppress: str, grid: bool) -> dict:
    """(edit index, suppress mode or GRID) → output path of one input."""
    names = {}
    for k, edit in enumerate(edits):
        names[k, suppress] = out_dir / f"{source.stem}_{edit.label}_{suppress}.png"
        if grid:
            names[k, GRID] = out_dir / f"{source.stem}_{edit.label}_{GRID}.png"
    return names


@dataclass
class _Job:
    source: Path
    outputs: dict  # key → path, only those still to write
    tensor: np.ndarray | None = None  # [1,3,S,S] once decoded


@dataclass
class FolderReport:
    """What a folder run did. `timings_ms` sums the pipeline's per-stage times over all batches;
    `io_ms` the decoding and encoding time spent in the worker threads, overlapped with them."""

    processed: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, message naming it)
    kept: list[Path] = field(default_factory=list)  # inputs whose outputs all existed already
    written: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    io_ms: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "encode": 0.0})
    elapsed_s: float = 0.0
    untrained: bool = False

    @property
    def images_per_second(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_folder(
    pipe: Pipeline,
    inputs: Sequence[Path],
    out_dir: str | Path,
    attribute: str | Sequence[str] = "smile",
    alpha: float | Sequence[float] = DEFAULT_ALPHA,
    suppress: str = "network",
    batch: int = 1,
    overwrite: bool = False,
    grid: bool = False,
    class_index: int | None = None,
    workers: int = 2,
    progress: bool = True,
) -> FolderReport:
    """Edit every input file and write the results to `out_dir` (see the module docstring).

    `grid` also runs the suppress modes of the comparison (network and eogi). Configuration errors
    (unknown attribute, missing stage) raise before any image is read; per-input problems end up
    in the report's `failed`.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is a file; give a folder")
    edits = pipe.edits(attribute, alpha, class_index)
    modes = suppress_modes(suppress, grid)
    report = FolderReport(untrained=pipe.untrained)
    jobs = _plan(inputs, out_dir, edits, suppress, grid, overwrite, report)
    if jobs:
        pipe.prepare(modes)
    protected = [Path(path) for path in inputs]
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(
        total=len(jobs), unit="img", desc="deghost edit", disable=not progress
    ) as bar:
        writes = []
        for ready in _decoded_batches(jobs, pool, batch, pipe.preset.image_size, report, bar):
            try:
                result = pipe.run(np.concatenate([job.tensor for job in ready]), edits, modes)
            except (BackendError, ImageError) as error:
                for job in ready:
                    _fail(report, job.source, f"inference failed: {error}", bar)
                continue
            for name, ms in result.timings_ms.items():
                report.timings_ms[name] = report.timings_ms.get(name, 0.0) + ms
            for i, job in enumerate(ready):
                job.tensor = None
                writes.append((job, pool.submit(_write_outputs, job, result, i, protected, overwrite)))
            report.processed += len(ready)
            bar.update(len(ready))
        for job, writing in writes:
            try:
                count, ms = writing.result()
                report.written += count
                report.io_ms["encode"] += ms
            except (ImageError, OSError) as error:
                _fail(report, job.source, write_failure(error), None)
    report.elapsed_s = time.perf_counter() - started
    return report


def suppress_modes(suppress: str, grid: bool) -> list[str]:
    """The suppress modes a run computes: the one asked for, plus those the comparison grid shows."""
    return list(dict.fromkeys([suppress, *(["network", "eogi"] if grid else [])]))


def _decoded_batches(jobs: list[_Job], pool: ThreadPoolExecutor, batch: int, side: int, report: FolderReport,
                     bar: tqdm) -> Iterator[list[_Job]]:
    """Batches of decoded jobs, in input order, with the next two batches decoding in `pool` meanwhile.
    Files that fail to decode are reported and left out."""
    queue, pending = iter(jobs), deque()

    def refill() -> None:
        while len(pending) < 2 * batch and (job := next(queue, None)) is not None:
            pending.append((job, pool.submit(_decode, job.source, side)))

    refill()
    while pending:
        ready = []
        while pending and len(ready) < batch:
            job, decoding = pending.popleft()
            refill()
            try:
                job.tensor, ms = decoding.result()
                report.io_ms["decode"] += ms
                ready.append(job)
            except ImageError as error:
                _fail(report, job.source, str(error), bar)
        if ready:
            yield ready


def _plan(inputs: Sequence[Path], out_dir: Path, edits: Sequence[Edit], suppress: str, grid: bool,
          overwrite: bool, report: FolderReport) -> list[_Job]:
    """One job per input with the outputs still to write; inputs with none left are `kept`."""
    jobs, claimed = [], {}
    for source in map(Path, inputs):
        outputs = output_paths(source, out_dir, edits, suppress, grid)
        clash = next((claimed[p] for p in outputs.values() if p in claimed), None)
        if clash is not None:
            _fail(report, source, f"its outputs would replace those of {clash} (same file name); rename one", None)
            continue
        claimed.update(dict.fromkeys(outputs.values(), source))
        todo = {key: path for key, path in outputs.items() if overwrite or not path.exists()}
        if todo:
            jobs.append(_Job(source, todo))
        else:
            report.kept.append(source)
    return jobs


def _decode(source: Path, side: int) -> tuple[np.ndarray, float]:
    """Read one file → (float32 [1,3,side,side], milliseconds); its warnings are logged."""
    start = time.perf_counter()
    loaded = read_image(source)
    tensor, warnings = to_model_input(loaded.rgb, side)
    for warning in loaded.warnings + [f"{source.name}: {w}" for w in warnings]:
        log.warning("%s", warning)
    return tensor, (time.perf_counter() - start) * 1e3


def _write_outputs(job: _Job, result: EditResult, image: int, protected: Sequence[Path],
                   overwrite: bool) -> tuple[int, float]:
    """Encode and write one input's outputs → (files written, milliseconds)."""
    start = time.perf_counter()
    for (k, kind), path in job.outputs.items():
        row = result.row(image, k)
        if kind == GRID:
            panels = [(title, from_model_output(result.images[image] if key is None else
                                                result.fused[row] if key == "fused" else result.outputs[key][row]))
                      for title, key in FIGURE2_COLUMNS]
            pixels = make_grid(panels, UNTRAINED_LABEL if result.untrained else None)
        else:
            pixels = from_model_output(result.outputs[kind][row])
        write_image(path, pixels, overwrite=overwrite, protected=protected)
    return len(job.outputs), (time.perf_counter() - start) * 1e3


def write_failure(error: Exception) -> str:
    """The report line of an output that could not be written; a full disk says so and what to do."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"writing failed: the output disk is full ({error}); free space or give another --out"
    return f"writing failed: {error}"


def _fail(report: FolderReport, source: Path, message: str, bar: tqdm | None) -> None:
    """Record a failed input; the message names the file (most ImageErrors already do)."""
    message = message if str(source) in message else f"{source}: {message}"
    report.failed.append((source, message))
    log.error("%s", message)
    if bar is not None:
        bar.update(1)


# The steps a distributed runner reuses (runtime/ray_batch.py), so its naming, skip-existing rule,
# decoding, encoding and failure messages are this module's: one source for each.
Job = _Job
plan_jobs = _plan
decode_input = _decode
write_outputs = _write_outputs
record_failure = _fail
