"""The training-loop kit every `deghost train` recipe shares: the batch stream, the loss guard (NaN
stop), the run log (progress bar + CSV), sample grids and mixed precision. Checkpoints and resuming
are in training/resume.py, processes (DDP under torchrun) in training/distributed.py.

A recipe's loop reads:

    (inside distributed.run(_train, config), which passes the process group's `context`)
    start, last = resume_or_seed(config, parts, context)          # resume.py
    with RunLog(run / "log.csv", ("step", …), start, config.iterations, context.is_main) as log:
        batches = batch_stream(dataset, config.batch_size, context, start, config.seed, config.workers)
        for step in range(start, end):
            … one update from next(batches) …
            values = check_finite(terms, step + 1, last, context)
            log.update(step + 1, values, (step + 1) % config.log_every == 0)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
                last = write_checkpoint(run / "checkpoints", step + 1, parts, config, context)   # resume.py

(the `with` closes the bar and the CSV also when the run stops on an error, before the error is printed)
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from deghost.runtime.grid import make_grid
from deghost.runtime.images import from_model_output, write_image

from . import distributed


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the last good checkpoint."""


def batch_stream(dataset: Dataset, batch_size: int, context: distributed.Context, start_step: int, seed: int,
                 workers: int) -> Iterator:
    """Batches for steps start_step, start_step + 1, … of this process, forever.

    The order is DistributedSampler's shuffle of (seed, epoch); the item keys passed to the dataset
    are epoch·len + index, so augmentation depends on the sample and epoch only. Resuming at a step
    skips straight to its batch without loading the earlier ones. Process r of N takes every N-th
    item of the shuffle from r on, so N processes with batch b see together, step by step, the
    items one process with batch N·b sees.
    """
    sampler = DistributedSampler(dataset, context.world_size, context.rank, shuffle=True, seed=seed)
    per_epoch = len(sampler) // batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(dataset)} items cannot fill one batch of {batch_size} per process on "
                         f"{context.world_size} process(es); lower --batch-size or add data")
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        keys = [epoch * len(dataset) + index for index in sampler][offset * batch_size : per_epoch * batch_size]
        # An own generator: DataLoader draws worker seeds from it, which would shift the global RNG
        # (dropout) differently in a resumed run, whose first epoch starts a DataLoader mid-way.
        yield from DataLoader(dataset, batch_size, sampler=keys, num_workers=workers,
                              pin_memory=context.device.type == "cuda",
                              generator=torch.Generator().manual_seed(seed + epoch))
        epoch, offset = epoch + 1, 0


def step_stream(seed: int, step: int, purpose: int = 0) -> torch.Generator:
    """The random stream of one purpose at one step, the same in every process and in a resumed run: per-sample
    draws are made from it for the global batch, each process keeping its rows (distributed.own_rows)."""
    value = np.random.SeedSequence([seed, step, purpose]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(value))


def mixed_precision(enabled: bool, device: torch.device):
    """bfloat16 autocast on CUDA GPUs that support it; a no-op context elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(terms: dict[str, Tensor], step: int, last_checkpoint: Path | None,
                 context: distributed.Context) -> dict[str, float]:
    """Loss terms averaged over processes, as floats; raise TrainingDiverged on NaN or Inf.

    Every process sees the same averages, so all of them stop together instead of hanging.
    """
    names = list(terms)
    values = distributed.mean_over_processes(torch.stack([terms[n].float() for n in names]), context).tolist()
    bad = [f"{n} = {v}" for n, v in zip(names, values, strict=True) if not math.isfinite(v)]
    if bad:
        where = (f"the last good checkpoint is {last_checkpoint}: resume from it with --resume {last_checkpoint} "
                 "(a lower --lr helps if it diverges again)") if last_checkpoint else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss {', '.join(bad)} at step {step}; training stopped, {where}")
    return dict(zip(names, values, strict=True))


class RunLog:
    """Rank 0's progress bar (loss terms, it/s) and CSV log; a resumed run keeps the rows up to its step."""

    def __init__(self, path: Path, columns: tuple[str, ...], start: int, total: int, enabled: bool,
                 description: str | None = None):
        self.enabled, self.columns, self.started = enabled, columns, time.perf_counter()
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if start > 0 and path.is_file():
            with path.open(newline="") as file:
                kept = [row for row in csv.DictReader(file) if int(row["step"]) <= start]
        self.file = path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, [*columns, "seconds"], extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc=description)

    def update(self, step: int, values: dict[str, float], write: bool) -> None:
        if not self.enabled:
            return
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k != "lr"}, refresh=False)
        if write:
            self.writer.writerow({"step": step, **values, "seconds": round(time.perf_counter() - self.started, 2)})
            self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_sample_grid(path: Path, columns: dict[str, Tensor], rows: int = 4) -> None:
    """A labelled grid with one row per sample and one column per entry of `columns`
    ({name: [B,3,H,W] in [-1,1]}, all of the same size), written atomically."""
    pictures = {name: from_model_output(value[:rows].detach().float().cpu().numpy())
                for name, value in columns.items()}
    count = min(len(value) for value in pictures.values())
    grid = np.vstack([make_grid([(name, pictures[name][r]) for name in columns]) for r in range(count)])
    write_image(path, grid, overwrite=True)
