"""The paper's result tables from per-image scores: Markdown for reading, CSV for plotting.

Table 1: one row per (attribute, method) with PSNR, SSIM, MAE and LPIPS as mean ± std over the
image pairs (population std, ddof 0). Table 2: FID, one row per method, one column per attribute.
A metric that was not computed (its weights were not supplied) shows as "—" (Markdown) or an
empty cell (CSV); the notes under the tables say why.

Files written by `write_tables(groups, out_dir, notes)`:
  metrics.md          both tables and the notes
  table1_metrics.csv  attribute, method, n, <metric>_mean, <metric>_std …, psnr_infinite
  table2_fid.csv      attribute, method, n, fid
  per_image.csv       attribute, method, name, psnr, ssim, mae, lpips
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deghost.files import atomic_write_bytes

# Per-image metrics in the order of Table 1: (label, better direction, decimals).
PER_IMAGE_METRICS = {
    "psnr": ("PSNR", "↑", 2),
    "ssim": ("SSIM", "↑", 3),
    "mae": ("MAE", "↓", 4),
    "lpips": ("LPIPS", "↓", 4),
}
FID_DECIMALS = 2
_MISSING = "—"
TABLE_FILES = ("metrics.md", "table1_metrics.csv", "table2_fid.csv", "per_image.csv")


@dataclass
class GroupResult:
    """The scores of one (attribute, method) group of image pairs.

    per_image: metric name → one value per entry of `names`; a metric that was not computed is absent.
    fid: between the group's outputs and references, None when not computed.
    notes: remarks on this group's numbers, listed under the tables.
    """

    attribute: str
    method: str
    names: list[str] = field(default_factory=list)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    fid: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    """mean and population std over the finite values; `infinite` counts the values left out."""

    mean: float
    std: float
    count: int
    infinite: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± std of per-image scores. +inf (PSNR of identical images) is left out and counted."""
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("a per-image score is NaN; check the images (all-constant or corrupt?) before summarising")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Summary(math.nan, math.nan, 0, int(values.size))
    return Summary(float(finite.mean()), float(finite.std()), int(finite.size), int(values.size - finite.size))


def _format_summary(values: list[float] | None, decimals: int) -> str:
    if values is None:
        return _MISSING
    summary = summarize(values)
    if summary.count == 0:
        return "inf"
    text = f"{summary.mean:.{decimals}f} ± {summary.std:.{decimals}f}"
    return f"{text} ({summary.infinite} inf left out)" if summary.infinite else text


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def format_markdown(groups: Sequence[GroupResult], notes: Sequence[str] = ()) -> str:
    """Both tables and the notes as one Markdown document."""
    header = ["Attribute", "Method", "N"] + [f"{label} {arrow}" for label, arrow, _ in PER_IMAGE_METRICS.values()]
    rows = [
        [group.attribute, group.method, str(len(group.names))]
        + [_format_summary(group.per_image.get(metric), decimals) for metric, (_, _, decimals) in
           PER_IMAGE_METRICS.items()]
        for group in groups
    ]
    lines = ["## Table 1: image quality (mean ± std over image pairs)", ""] + _markdown_table(header, rows)

    attributes = list(dict.fromkeys(group.attribute for group in groups))
    methods = list(dict.fromkeys(group.method for group in groups))
    fid = {(group.attribute, group.method): group.fid for group in groups}
    fid_rows = [
        [method]
        + [_MISSING if fid.get((attribute, method)) is None else f"{fid[(attribute, method)]:.{FID_DECIMALS}f}"
           for attribute in attributes]
        for method in methods
    ]
    lines += ["", "## Table 2: FID ↓ per attribute", ""] + _markdown_table(["Method"] + attributes, fid_rows)
    notes = list(notes) + [f"{group.attribute}/{group.method}: {note}" for group in groups for note in group.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _csv_number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def _table1_csv_rows(groups: Sequence[GroupResult]) -> list[list[str]]:
    rows = []
    for group in groups:
        row = [group.attribute, group.method, str(len(group.names))]
        for metric in PER_IMAGE_METRICS:
            values = group.per_image.get(metric)
            if values is None:
                row += ["", ""]
            else:
                summary = summarize(values)
                row += [_csv_number(summary.mean), _csv_number(summary.std)]
        psnr = group.per_image.get("psnr")
        rows.append(row + ["" if psnr is None else str(summarize(psnr).infinite)])
    return rows


def _per_image_csv_rows(groups: Sequence[GroupResult]) -> list[list[str]]:
    return [
        [group.attribute, group.method, name]
        + [_csv_number(group.per_image[metric][index]) if metric in group.per_image else ""
           for metric in PER_IMAGE_METRICS]
        for group in groups
        for index, name in enumerate(group.names)
    ]


def write_tables(groups: Sequence[GroupResult], out_dir: str | Path, notes: Sequence[str] = ()) -> list[Path]:
    """Write metrics.md and the three CSV files into `out_dir` (created), each atomically (existing ones replaced)."""
    out_dir = Path(out_dir)
    markdown = atomic_write_bytes(out_dir / "metrics.md", format_markdown(groups, notes).encode("utf-8"))
    summary_columns = [f"{metric}_{stat}" for metric in PER_IMAGE_METRICS for stat in ("mean", "std")]
    table1 = _write_csv(
        out_dir / "table1_metrics.csv",
        ["attribute", "method", "n", *summary_columns, "psnr_infinite"],
        _table1_csv_rows(groups),
    )
    table2 = _write_csv(
        out_dir / "table2_fid.csv",
        ["attribute", "method", "n", "fid"],
        [[group.attribute, group.method, str(len(group.names)), _csv_number(group.fid)] for group in groups],
    )
    per_image = _write_csv(
        out_dir / "per_image.csv", ["attribute", "method", "name", *PER_IMAGE_METRICS], _per_image_csv_rows(groups)
    )
    return [markdown, table1, table2, per_image]
