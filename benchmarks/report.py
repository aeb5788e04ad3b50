"""Benchmark results: collected during the run, written at the end as JSON, Markdown and a bar chart.

The README's results section is generated from the Markdown file, so every figure there carries
the machine it was measured on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

KEPT_NOTE = "Sections kept from an earlier run on the same preset"


@dataclass
class Report:
    machine: dict
    sections: dict[str, list[dict]] = field(default_factory=dict)  # title → rows (same keys per section)
    notes: list[str] = field(default_factory=list)
    charted: dict[str, str] = field(default_factory=dict)  # title → the column its chart plots
    # title → "measured <when> on <machine>" for sections kept from an earlier run on another machine
    provenance: dict[str, str] = field(default_factory=dict)
    measured: str = field(default_factory=lambda: f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")

    def add(self, section: str, row: dict, chart: str = "seconds") -> None:
        """A row of `section`; the section's chart plots column `chart` of the rows that have a "label"."""
        self.sections.setdefault(section, []).append(row)
        self.charted[section] = chart

    def markdown(self) -> str:
        lines = ["# deghost benchmark results", ""]
        lines.append("Machine: " + machine_line(self.machine))
        lines.append(f"Measured {self.measured} with "
                     "`pytest benchmarks --benchmark-only`. Weights are untrained (random, seeded): "
                     "sizes and timings only.")
        for title, rows in self.sections.items():
            lines += ["", f"## {title}", ""]
            if title in self.provenance:
                lines += [f"Kept from an earlier run: {self.provenance[title]}.", ""]
            keys = list(rows[0])
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            lines += ["| " + " | ".join(_format(row.get(k)) for k in keys) + " |" for row in rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def keep_earlier(self, path: Path) -> None:
        """Keep the sections (and notes) of an earlier results.json that this run did not measure, so
        a run of some benchmarks adds to the results files instead of replacing them. A kept section
        measured on another machine says which one and when, since the header names this run's."""
        if not path.is_file():
            return
        earlier = json.loads(path.read_text())
        measured = {_family(title) for title in self.sections}  # a title's "(…)" holds figures that change
        kept = [title for title in earlier.get("sections", {}) if _family(title) not in measured]
        earlier_provenance = earlier.get("provenance", {})
        for title in kept:
            self.sections[title] = earlier["sections"][title]
            origin = earlier_provenance.get(title)
            if origin is None and earlier.get("machine") != self.machine:
                origin = f"measured {earlier.get('measured', 'earlier')} on " + machine_line(earlier.get("machine", {}))
            if origin:
                self.provenance[title] = origin
        if kept:
            current = {_note_key(note) for note in self.notes}  # a note of this run replaces the earlier one
            self.notes += [note for note in earlier.get("notes", [])
                           if _note_key(note) not in current and not note.startswith(KEPT_NOTE)]
            self.notes.append(f"{KEPT_NOTE}: {'; '.join(kept)}.")

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "results.json", folder / "results.md"]
        self.keep_earlier(paths[0])
        paths[0].write_text(json.dumps({"machine": self.machine, "measured": self.measured, "sections": self.sections,
                                        "provenance": self.provenance, "notes": self.notes}, indent=2, default=str)
                            + "\n")
        paths[1].write_text(self.markdown())
        charts = []  # one chart per section: each on its own scale
        for title, rows in self.sections.items():
            column = self.charted.get(title, "seconds")
            bars = [(row["label"], row[column]) for row in rows if "label" in row and column in row]
            if bars:
                charts.append(bar_chart(bars, f"{title[:100]}: {column} (lower is better)"))
        if charts:
            paths.append(folder / "results.png")
            cv2.imwrite(str(paths[-1]), np.vstack(charts))
        return paths


def machine_line(machine: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in machine.items())


def _note_key(note: str) -> str:
    """What a note is about: its words before the first colon ("End to end (ffhq1024)", "CPU peak")."""
    return note.split(":", 1)[0]


def _family(title: str) -> str:
    """A section title without its parenthesised figures (the peaks it divides by, ...)."""
    return title.split(" (")[0]


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def bar_chart(bars: list[tuple[str, float]], title: str, width: int = 900) -> np.ndarray:
    """A horizontal bar chart as a BGR image (OpenCV only: no plotting dependency)."""
    row, margin, label_width = 28, 12, 330
    height = margin * 3 + row * (len(bars) + 1)
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(image, title, (margin, margin + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    longest = max(value for _, value in bars) or 1.0
    for index, (label, value) in enumerate(bars):
        top = margin * 2 + row * (index + 1)
        length = int((width - label_width - 90) * value / longest)
        cv2.putText(image, label[:44], (margin, top + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.rectangle(image, (label_width, top + 4), (label_width + length, top + row - 6), (180, 110, 40), -1)
        text = f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
        cv2.putText(image, text, (label_width + length + 6, top + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return image
