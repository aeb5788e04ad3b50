"""Seeded latent draws, rendered and scored in batches, kept on disk chunk by chunk: a killed run resumes.

Chunk k holds samples k·CHUNK … (k+1)·CHUNK − 1 (its first ones only, where a run needed fewer), drawn from the
stream seeded by (seed, k), so a sample's latent depends only on the settings and its index, never on the batch
size or on where an earlier run stopped. The
folder's settings.json records what the scores depend on; a folder made with other settings is refused.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deghost.files import atomic_write_bytes

CHUNK = 64  # samples per file: at 1024² about two minutes of rendering on 2 CPU cores, what a kill can lose
SPACES = ("w", "wplus")
SETTINGS_FILE = "settings.json"


class SampleStoreError(ValueError):
    """A sample folder that does not belong to this job; the message names the fix."""


@dataclass(frozen=True)
class SampleSettings:
    space: str  # "w": one code per face (InterFaceGAN's choice for StyleGAN); "wplus": two codes mixed per face
    truncation: float  # ψ: w̄ + ψ·(w − w̄)
    seed: int
    weights: str  # provenance of the generator and the classifier ("sha256:…" or "untrained: seed N")
    preset: str


class LatentSampler:
    """z ~ N(0, 1) → the mapping network → truncation; W+ by broadcasting (W) or by style mixing at a random
    layer (W+). `mapping(z [B,512] float32 numpy) → w [B,512]`."""

    def __init__(self, mapping: Callable[[np.ndarray], np.ndarray], mean_w: np.ndarray, n_latent: int,
                 settings: SampleSettings):
        if settings.space not in SPACES:
            raise ValueError(f"latent space must be one of {', '.join(SPACES)}; got {settings.space!r}")
        self.mapping, self.n_latent, self.settings = mapping, n_latent, settings
        self.mean_w = np.asarray(mean_w, np.float32).reshape(-1)

    def _codes(self, rng: np.random.Generator, count: int) -> np.ndarray:
        z = rng.standard_normal((count, self.mean_w.shape[-1]), dtype=np.float32)
        return self.mean_w + np.float32(self.settings.truncation) * (self.mapping(z) - self.mean_w)

    def draw(self, chunk: int, count: int = CHUNK) -> np.ndarray:
        """Chunk `chunk`'s latents: W [count, 512] or W+ [count, n_latent, 512], float32."""
        rng = np.random.default_rng([self.settings.seed, chunk])
        w = self._codes(rng, count)
        if self.settings.space == "w":
            return w
        other = self._codes(rng, count)
        crossover = rng.integers(1, self.n_latent, size=count)
        layer = np.arange(self.n_latent)[None, :, None]
        return np.where(layer < crossover[:, None, None], w[:, None], other[:, None]).astype(np.float32)

    def wplus(self, latents: np.ndarray) -> np.ndarray:
        """Latents as stored → W+ [B, n_latent, 512]."""
        return np.repeat(latents[:, None], self.n_latent, 1) if latents.ndim == 2 else latents

    @property
    def mean_wplus(self) -> np.ndarray:
        return np.repeat(self.mean_w.reshape(1, -1), self.n_latent, 0)


class SampleStore:
    """chunk_000000.npz … (latents, scores) under `folder`, with the settings they were made with."""

    def __init__(self, folder: str | Path, settings: SampleSettings):
        self.folder, self.settings = Path(folder), settings
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / SETTINGS_FILE
        wanted = asdict(settings)
        if path.is_file():
            found = json.loads(path.read_text())
            if found != wanted:
                changed = ", ".join(f"{k} {found.get(k)!r} → {v!r}" for k, v in wanted.items() if found.get(k) != v)
                raise SampleStoreError(
                    f"the samples in {self.folder} were made with other settings ({changed}); give another "
                    "--samples-dir, or delete that folder to start over"
                )
        else:
            atomic_write_bytes(path, (json.dumps(wanted, indent=2) + "\n").encode())

    def _path(self, chunk: int) -> Path:
        return self.folder / f"chunk_{chunk:06d}.npz"

    def scored(self, chunk: int) -> int:
        """Samples chunk `chunk` holds (0: none yet; fewer than CHUNK when a run needed fewer)."""
        path = self._path(chunk)
        if not path.is_file():
            return 0
        with np.load(path) as data:
            return len(data["scores"])

    def write(self, chunk: int, latents: np.ndarray, scores: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, latents=latents, scores=scores)
        atomic_write_bytes(self._path(chunk), buffer.getvalue())

    def read(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` samples: (latents, scores [count, n_classes])."""
        parts = []
        for chunk in range(math.ceil(count / CHUNK)):
            with np.load(self._path(chunk)) as data:
                parts.append((data["latents"], data["scores"]))
        latents = np.concatenate([part[0] for part in parts])[:count]
        scores = np.concatenate([part[1] for part in parts])[:count]
        return latents, scores


def collect(store: SampleStore, sampler: LatentSampler, scorer, count: int, batch_size: int,
            progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Make the chunks the first `count` samples need that the store lacks, then return those samples."""
    from tqdm import tqdm

    if count < 1 or batch_size < 1:
        raise ValueError(f"samples and batch size must be at least 1; got {count} and {batch_size}")
    chunks = math.ceil(count / CHUNK)
    needed = {k: min(CHUNK, count - k * CHUNK) for k in range(chunks)}
    todo = [k for k in range(chunks) if store.scored(k) < needed[k]]
    bar = tqdm(total=count, initial=count - sum(needed[k] for k in todo), unit="sample", disable=not progress,
               desc=f"render + score ({scorer.kind})")
    with bar:
        for chunk in todo:
            latents = sampler.draw(chunk)[: needed[chunk]]  # a chunk's latents do not depend on how many are used
            scores = []
            for start in range(0, len(latents), batch_size):
                part = latents[start:start + batch_size]
                scores.append(np.asarray(scorer(sampler.wplus(part)), np.float32))
                bar.update(len(part))
            store.write(chunk, latents, np.concatenate(scores))
    return store.read(count)
