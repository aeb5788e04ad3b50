"""Folder mode: many image files through the pipeline, decoding and encoding overlapped with inference.

Each file is an ordinary photo by default: its faces are found and aligned while it is decoded, all
faces of a batch of files are edited as one pipeline batch, and each edit is pasted back into the
whole photo, which is what gets written (a photo with no face fails, like an unreadable file). With
`FaceOptions(aligned=True)` a file is taken as an FFHQ-aligned face and the edited crop is written
(the Pipeline's `crops` and `edited` decide both). What to run is one FolderRun, checked once; the
steps are separate functions (plan → decode → process_batch → write_outputs) so other drivers (a Ray
Data job, ray_batch.py) run the same FolderRun with them.

A small thread pool decodes the next images while the current batch runs (OpenCV and the backends
release the GIL), and encodes and writes the results while the next batch runs. A file that cannot
be read, whose faces cannot be found or pasted back, or whose outputs cannot be written (whatever
the exception: it is that file's), or whose batch fails in the backends (BackendError, ImageError:
every file of the batch), is reported and skipped; the run goes on. Outputs are written atomically,
never onto an input, and existing outputs are kept unless `overwrite`.

Output names: `<out>/<input stem>_<attribute><alpha>_<suppress>.png` (e.g. `face_smile+20_network.png`),
and with `grid` also `<stem>_<attribute><alpha>_grid.png`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deghost.runtime.backends import BackendError
from deghost.runtime.directions import DEFAULT_ALPHA
from deghost.runtime.faces import NoFaceError
from deghost.runtime.grid import FIGURE2_COLUMNS, make_grid
from deghost.runtime.images import (
    IMAGE_SUFFIXES,
    ImageError,
    TooLargeError,
    from_model_output,
    image_files,
    read_image,
    write_image,
)
from deghost.runtime.pipeline import UNTRAINED_LABEL, Crops, FaceOptions, Pipeline
from deghost.runtime.results import Edit, EditResult
from deghost.runtime.video.io import VIDEO_SUFFIXES

from .. import refusals

log = logging.getLogger("deghost.runtime")
INPUT_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES  # what folders are searched for: photos and clips

GRID = "grid"  # the output key of the comparison image


class StepError(Exception):
    """A step of one input's processing (finding its faces, pasting them back) raised something unexpected:
    that input fails, the run goes on. The message names the step and the cause."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"{step} failed ({type(cause).__name__}: {cause})")


def collect_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and the photos and clips directly inside each folder (sorted; hidden ones skipped).

    A path that does not exist stays in the list, so the run reports it as a failed input.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += image_files(path, INPUT_SUFFIXES)
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
class Job:
    """One input: the outputs still to write and, once decoded, what goes through the pipeline."""

    source: Path
    outputs: dict  # key → path, only those still to write
    crops: Crops | None = None  # once decoded: the photo's aligned faces (and the photo), or the aligned image


@dataclass
class FolderRun:
    """What a folder run does, locally (run_folder) or on Ray (run_folder_ray): the input files, the output
    folder, every attribute at every alpha, the suppress mode (with `grid` also the comparison's), input
    files per batch, whether existing outputs are replaced, and how inputs are taken (FaceOptions)."""

    inputs: Sequence[Path]
    out_dir: Path
    attribute: str | Sequence[str] = "smile"
    alpha: float | Sequence[float] = DEFAULT_ALPHA
    suppress: str = "network"
    batch: int = 1
    overwrite: bool = False
    grid: bool = False
    class_index: int | None = None
    face_options: FaceOptions = field(default_factory=FaceOptions)

    def __post_init__(self) -> None:
        """The checks both drivers need before any image is read."""
        self.inputs, self.out_dir = [Path(path) for path in self.inputs], Path(self.out_dir)
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1; got {self.batch}")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"output folder {self.out_dir} is a file; give a folder")

    @property
    def modes(self) -> list[str]:
        """The suppress modes the run computes: the one asked for, plus those the comparison grid shows."""
        return list(dict.fromkeys([self.suppress, *(["network", "eogi"] if self.grid else [])]))

    def edits(self, pipe: Pipeline) -> list[Edit]:
        """The run's edits; configuration errors (unknown attribute, bad direction file) raise here."""
        return pipe.edits(self.attribute, self.alpha, self.class_index)


@dataclass
class FolderReport:
    """What a folder run did. `timings_ms` sums the pipeline's per-stage times over all batches;
    `io_ms` the decoding (with face finding) and encoding time spent in the worker threads, overlapped with them."""

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


def run_folder(pipe: Pipeline, run: FolderRun, workers: int = 2, progress: bool = True) -> FolderReport:
    """Edit every input file of `run` and write the results to its `out_dir` (see the module docstring).

    `workers` threads decode and write while the pipeline runs. Configuration errors (unknown attribute,
    missing stage) raise before any image is read; per-input problems (no face included) end up in the
    report's `failed`. `run.batch` counts input files: all faces of a batch's photos go through the
    pipeline as one batch.
    """
    edits = run.edits(pipe)
    report = FolderReport(untrained=pipe.untrained)
    jobs = plan(run, edits, report)
    if jobs:  # the stages warm up while the first photos are decoded and their faces found
        pipe.prepare(run.modes, warm=(run.batch, len(edits)))
    started = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(
        total=len(jobs), unit="img", desc="deghost edit", disable=not progress
    ) as bar:
        writes = []
        for ready in _decoded_batches(jobs, pool, run, pipe, report, bar):
            try:
                result = process_batch(pipe, ready, edits, run.modes)
            except (BackendError, ImageError) as error:
                for job in ready:
                    record_failure(report, job.source, f"inference failed: {error}", bar)
                continue
            for name, ms in result.timings_ms.items():
                report.timings_ms[name] = report.timings_ms.get(name, 0.0) + ms
            first = 0
            for job in ready:
                writes.append((job, pool.submit(write_outputs, pipe, job, result, first, run)))
                first += job.crops.rows
                job.crops.tensor = None
            report.processed += len(ready)
            bar.update(len(ready))
        for job, writing in writes:
            try:
                count, ms = writing.result()
                report.written += count
                report.io_ms["encode"] += ms
            except Exception as error:  # pasting or writing one photo fails that photo alone
                record_failure(report, job.source, write_failure(error), None)
    report.elapsed_s = time.perf_counter() - started
    return report


def _decoded_batches(jobs: list[Job], pool: ThreadPoolExecutor, run: FolderRun, pipe: Pipeline,
                     report: FolderReport, bar: tqdm) -> Iterator[list[Job]]:
    """Batches of decoded jobs, in input order, with the next two batches decoding in `pool` meanwhile.
    Files that fail to decode (or hold no face) are reported and left out."""
    queue, pending, batch = iter(jobs), deque(), run.batch

    def refill() -> None:
        while len(pending) < 2 * batch and (job := next(queue, None)) is not None:
            pending.append((job, pool.submit(decode, job, pipe, run.face_options)))

    refill()
    while pending:
        ready = []
        while pending and len(ready) < batch:
            job, decoding = pending.popleft()
            refill()
            try:
                report.io_ms["decode"] += decoding.result()
                ready.append(job)
            except Exception as error:  # whatever goes wrong with one file, only that file fails
                record_failure(report, job.source, decode_failure(error), bar)
        if ready:
            yield ready


def plan(run: FolderRun, edits: Sequence[Edit], report: FolderReport) -> list[Job]:
    """One job per input with the outputs still to write; inputs with none left are `kept`."""
    jobs, claimed = [], {}
    for source in run.inputs:
        outputs = output_paths(source, run.out_dir, edits, run.suppress, run.grid)
        clash = next((claimed[p] for p in outputs.values() if p in claimed), None)
        if clash is not None:
            record_failure(report, source, f"its outputs would replace those of {clash} (same file name); rename one",
                           None)
            continue
        claimed.update(dict.fromkeys(outputs.values(), source))
        todo = {key: path for key, path in outputs.items() if run.overwrite or not path.exists()}
        if todo:
            jobs.append(Job(source, todo))
        else:
            report.kept.append(source)
    return jobs


def decode(job: Job, pipe: Pipeline, options: FaceOptions) -> float:
    """Read the job's file and fill in its crops (`Pipeline.crops`) → milliseconds; warnings are logged.
    Raises ImageError (NoFaceError when the photo has no face to edit), StepError when face finding raised
    anything else."""
    start = time.perf_counter()
    try:
        loaded = read_image(job.source)
    except TooLargeError as error:  # refused from its size or header, before anything was decoded
        raise TooLargeError(refusals.too_large(error, "cli", str(job.source)), error.what, error.amount,
                            error.limit, error.size) from None
    for warning in loaded.warnings:
        log.warning("%s", warning)
    try:
        job.crops = pipe.crops(loaded.rgb, options)
    except NoFaceError as error:
        raise NoFaceError(refusals.no_face(error, "cli", str(job.source)), error.min_face, error.size) from error
    except ImageError:
        raise
    except Exception as error:
        raise StepError("finding its faces", error) from error
    for warning in job.crops.warnings:
        log.warning("%s: %s", job.source.name, warning)
    return (time.perf_counter() - start) * 1e3


def process_batch(pipe: Pipeline, jobs: Sequence[Job], edits: Sequence[Edit], modes: Sequence[str]) -> EditResult:
    """Every decoded job's images (a photo's faces, or one aligned image) through the pipeline as one batch;
    job j's images are rows first_j … of the result, first_j = the images of the jobs before it."""
    return pipe.run(np.concatenate([job.crops.tensor for job in jobs]), edits, list(modes))


def write_outputs(pipe: Pipeline, job: Job, result: EditResult, first: int, run: FolderRun) -> tuple[int, float]:
    """Encode and write one input's outputs (its images are result rows `first`, …) → (files written, ms).
    Raises StepError when pasting the faces back raised, ImageError or OSError when writing failed."""
    start = time.perf_counter()
    crops = job.crops
    edited = _edited(pipe, crops, result, first)
    for (k, kind), path in job.outputs.items():
        if kind == GRID:
            panels = [panel for i in range(crops.rows)
                      for panel in _grid_panels(result, first + i, k, crops.rows > 1, i)]
            if crops.photo is not None:
                panels += _photo_panels(crops.photo, edited, k, result.images.shape[-1])
            pixels = make_grid(panels, UNTRAINED_LABEL if result.untrained else None)
        else:
            pixels = edited[kind][k]
        write_image(path, pixels, overwrite=run.overwrite, protected=run.inputs)
    return len(job.outputs), (time.perf_counter() - start) * 1e3


def _edited(pipe: Pipeline, crops: Crops, result: EditResult, first: int) -> dict[str, list[np.ndarray]]:
    try:
        return pipe.edited(crops, result, first)
    except Exception as error:
        raise StepError("pasting the edited faces back", error) from error


def _grid_panels(result: EditResult, image: int, k: int, numbered: bool, face: int) -> list[tuple[str, np.ndarray]]:
    """One aligned image's Figure-2 columns: original | fused | EOGI | ours."""
    row = result.row(image, k)
    prefix = f"face {face}: " if numbered else ""
    return [(prefix + title, from_model_output(result.images[image] if key is None else
                                               result.fused[row] if key == "fused" else result.outputs[key][row]))
            for title, key in FIGURE2_COLUMNS]


def _photo_panels(photo: np.ndarray, photos: dict[str, list[np.ndarray]], k: int, height: int
                  ) -> list[tuple[str, np.ndarray]]:
    """The photo before and after (network output pasted back), scaled to the crops' height."""
    width = max(1, round(photo.shape[1] * height / photo.shape[0]))
    scaled = lambda rgb: cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)  # noqa: E731
    return [("photo", scaled(photo)), ("photo, ours", scaled(photos["network"][k]))]


def decode_failure(error: Exception) -> str:
    """The report line of an input that could not be decoded or have its faces found."""
    if isinstance(error, (ImageError, StepError)):  # NoFaceError included; these name the file or the step
        return str(error)
    return f"could not be read ({type(error).__name__}: {error})"


def write_failure(error: Exception) -> str:
    """The report line of an input whose outputs could not be made (pasted back or written); a full disk is
    the DiskFullError that every write raises (deghost.files), whose message says what to do."""
    if isinstance(error, StepError):
        return str(error)
    if isinstance(error, (ImageError, OSError)):
        return f"writing failed: {error}"
    return f"writing failed ({type(error).__name__}: {error})"


def record_failure(report: FolderReport, source: Path, message: str, bar: tqdm | None) -> None:
    """Record a failed input; the message names the file (most ImageErrors already do)."""
    message = message if str(source) in message else f"{source}: {message}"
    report.failed.append((source, message))
    log.error("%s", message)
    if bar is not None:
        bar.update(1)

