"""Entanglement, measured: how much an edit w + α·n̂ moves every classifier class's score, over a set of samples.

For each direction the change Δ_c = s_c(w + α·n̂) − s_c(w) of every class c's score (the logit `scorers` computes)
is averaged over the samples; a disentangled direction moves its own class and leaves the others near zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deghost.runtime.directions import apply_direction, normalize_direction

UNTRAINED_NOTE = "untrained weights: the numbers show the plumbing, not the attributes"


@dataclass(frozen=True)
class ScoreChange:
    mean: np.ndarray  # [n_classes] mean Δ score over the samples
    std: np.ndarray  # [n_classes]

    def as_dict(self) -> dict:
        return {"mean": [round(float(v), 6) for v in self.mean], "std": [round(float(v), 6) for v in self.std]}


def measure(scorer, wplus: np.ndarray, base_scores: np.ndarray | None, directions: dict[str, np.ndarray],
            alpha: float, batch_size: int) -> dict[str, ScoreChange]:
    """wplus [M, n_latent, 512]; base_scores [M, C] (the scorer's, None to compute them); each direction any
    (n_latent, 512) array, normalised here as the pipeline does → {label: the change of every class's score}."""
    def scores(latents: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(scorer(latents[i:i + batch_size]), np.float64)
                               for i in range(0, len(latents), batch_size)])

    base = scores(wplus) if base_scores is None else np.asarray(base_scores, np.float64)
    changes = {}
    for label, direction in directions.items():
        unit = normalize_direction(direction[: wplus.shape[1]], source=label)
        delta = scores(apply_direction(wplus, unit, alpha)) - base
        changes[label] = ScoreChange(delta.mean(0), delta.std(0))
    return changes


def table(changes: dict[str, ScoreChange], class_names: list[str], target: int | None, alpha: float, samples: int,
          untrained: bool) -> str:
    """Markdown: a row per classifier class (the edited one marked), a column per direction, mean ± std of Δ."""
    head = f"Change of each class's score at α = {alpha:g}, mean ± std over {samples} samples"
    lines = [head + (f" ({UNTRAINED_NOTE})" if untrained else ""), "",
             "| class | " + " | ".join(changes) + " |", "|---|" + "---|" * len(changes)]
    for index, name in enumerate(class_names):
        name = name if name.startswith("class ") else f"{name} ({index})"
        label = f"**{name}** (edited)" if index == target else name
        cells = [f"{c.mean[index]:+.3f} ± {c.std[index]:.3f}" for c in changes.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
