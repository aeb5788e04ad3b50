"""`deghost train synthesize --ray`: the training pairs made by a pool of Ray actors (Ray Data).

The paper's 70,000 FFHQ pairs take about two days on one CPU machine: here each actor holds one
ghosting source (one opened Pipeline for `--source pipeline`) and makes its batches of pairs with
data.py's own functions (same per-item seeds, same files), while the driver alone appends the
finished entries to manifest.jsonl, in input order (so the dataset equals the local run's), and a
re-run skips the pairs already listed. An actor that dies is restarted and its batch re-made (its
files are rewritten atomically with the same pixels; its entries reach the manifest once).
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from deghost.runtime.directions import DEFAULT_ALPHA, PAPER_ATTRIBUTES
from deghost.runtime.images import ImageError, read_image
from deghost.runtime.ray_cluster import MAX_RESTARTS, MAX_TASK_RETRIES, connected

# data.py's steps, reused so a Ray run and a local run make the same dataset
from .data import (
    SynthesisReport,
    _check_settings,
    _drop_partial_line,
    _items,
    _make_chunk,
    list_images,
    read_manifest,
    square_image,
)


class SynthesisActor:
    """One Ray actor: one ghosting source; each call makes one batch of pairs → their manifest entries."""

    def __init__(self, source: str, engines: str, backend: str, threads: int | None, out: str, settings: dict,
                 precision: str | None = None, device: str = "auto"):
        if source == "pipeline":
            from deghost.runtime.pipeline import Pipeline

            from .data import PipelineGhosting

            self.ghosting = PipelineGhosting(Pipeline.load(engines, backend=backend, threads=threads,
                                                           precision=precision, device=device))
        else:
            from .synthetic import SyntheticGhosting

            self.ghosting = SyntheticGhosting()
        self.out, self.settings = Path(out), settings

    def __call__(self, batch: dict) -> dict:
        chunk, skipped = [], []
        for item_id, path in zip(batch["id"], batch["path"], strict=True):
            try:
                chunk.append((str(item_id), Path(path), square_image(read_image(path).rgb, self.settings["size"])))
            except ImageError as error:
                skipped.append({"source": str(path), "reason": str(error)})
        entries = _make_chunk(chunk, self.ghosting, self.out, self.settings)
        return {"inputs": [len(batch["id"])], "entries": [json.dumps(entries)], "skipped": [json.dumps(skipped)]}


def synthesize_pairs_ray(sources: str | Path, out: str | Path, source: str = "synthetic", engines: str = "engines",
                         backend: str = "auto", size: int | None = None, alpha: float = DEFAULT_ALPHA, seed: int = 0,
                         attributes=PAPER_ATTRIBUTES, batch_size: int = 1, address: str | None = None,
                         workers: int = 1, threads: int | None = None, progress: bool = True,
                         precision: str | None = None, device: str = "auto") -> SynthesisReport:
    """`data.synthesize_pairs` on Ray: same dataset folder, manifest and report (module docstring)."""
    sources, out = Path(sources), Path(out)
    if size is None:
        if source == "pipeline":
            from deghost.runtime.pipeline import Pipeline

            size = Pipeline.load(engines).preset.image_size
        else:
            size = 1024
    settings = {"source": source, "size": size, "alpha": alpha, "seed": seed, "attributes": list(attributes)}
    _check_settings(out, settings)
    done = {entry["id"] for entry in read_manifest(out, missing_ok=True)}
    _drop_partial_line(out / "manifest.jsonl")
    items = _items(sources, list_images(sources))
    report = SynthesisReport(already_done=sum(item_id in done for item_id in items))
    rows = [{"id": item_id, "path": str(path)} for item_id, path in items.items() if item_id not in done]
    if rows:
        with connected(address) as ray:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.execution_options.preserve_order = True  # manifest lines in the local run's order
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            results = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers))).map_batches(
                SynthesisActor, batch_size=batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=cpus / workers, fn_constructor_kwargs=dict(
                    source=source, engines=str(engines), backend=backend,
                    threads=threads or max(1, cpus // workers), out=str(out), settings=settings,
                    precision=precision, device=device),
                max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES,
            )
            with (out / "manifest.jsonl").open("a", encoding="utf-8") as manifest, tqdm(
                total=len(items), initial=report.already_done, desc="pairs (ray)", unit="pair", disable=not progress
            ) as bar:
                for row in results.iter_rows():
                    for entry in json.loads(row["entries"]):
                        manifest.write(json.dumps(entry) + "\n")
                        manifest.flush()
                        report.made += 1
                    report.skipped += json.loads(row["skipped"])
                    bar.update(int(row["inputs"]))
    (out / "skipped.json").write_text(json.dumps(report.skipped, indent=1) + "\n", encoding="utf-8")
    return report

