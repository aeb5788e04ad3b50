"""Training pairs for the suppressor: made once, written to disk, read back as a torch Dataset.

docs/design.md §1: each source image I gets one random attribute of the four, goes through the pipeline up
to F_fused, and the target is F_train = seamlessClone(F_fused → I, M_face). A dataset folder holds

    dataset.json       how it was made (source, size, alpha, seed, attributes): a rerun must match
    manifest.jsonl     one line per finished pair: id, source, attribute, alpha, seed, file paths
    skipped.json       the sources the last run could not read, with the reason
    image/<id>.png  fused/<id>.png  target/<id>.png  face_mask/<id>.png

A pair's line is appended only after its four images are written (each atomically), so an
interrupted run resumes where it stopped and never trusts a half-written pair. An item's seed
comes from the run's seed and the item's id, so the same pair comes out whatever the order or
the interruptions.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from deghost.runtime.blend import poisson_blend
from deghost.runtime.directions import DEFAULT_ALPHA, PAPER_ATTRIBUTES
from deghost.runtime.images import (
    IMAGE_SUFFIXES,
    ImageError,
    from_model_output,
    read_image,
    to_model_input,
    write_image,
)

from .synthetic import Ghosted

FOLDERS = ("image", "fused", "target", "face_mask")


class DatasetError(ValueError):
    """A dataset folder that cannot be made, continued or read."""


class GhostingSource(Protocol):
    """Makes F_fused and M_face for a batch of images edited with one attribute.

    images: RGB uint8 [S,S,3] each; rngs: one generator per image (synthetic sources draw from it).
    Returns one Ghosted per image: `fused` RGB uint8 [S,S,3], `face_mask` uint8 [S,S] in {0,255}.
    """

    name: str

    def __call__(
        self, images: list[np.ndarray], attribute: str, alpha: float, rngs: list[np.random.Generator]
    ) -> list[Ghosted]: ...


class PipelineGhosting:
    """The real source: `deghost.runtime.pipeline.Pipeline` with suppress="none", and its BiSeNet face mask."""

    name = "pipeline"

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.size = pipeline.preset.image_size

    def __call__(
        self, images: list[np.ndarray], attribute: str, alpha: float, rngs: list[np.random.Generator]
    ) -> list[Ghosted]:
        if any(image.shape[:2] != (self.size, self.size) for image in images):
            raise DatasetError(f"the pipeline works at {self.size}²; synthesize with --size {self.size}")
        result = self.pipeline.edit(images, attribute, alpha, suppress="none")
        masks = self.pipeline.face_mask(self.pipeline.model_batch(images)[0], result.fused)
        return [Ghosted(fused, mask) for fused, mask in zip(result.rgb("fused"), masks, strict=True)]


@dataclass
class SynthesisReport:
    made: int = 0  # pairs written by this run
    already_done: int = 0  # pairs found in the manifest and skipped
    skipped: list[dict] = field(default_factory=list)  # {"source", "reason"} of unreadable sources


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder; pass the folder that holds the source images")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def square_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 [H,W,3] → center-cropped and resized RGB uint8 [size,size,3] (as the pipeline does)."""
    return from_model_output(to_model_input(rgb, size)[0][0])


def item_seed(seed: int, item_id: str) -> int:
    """A per-item seed that depends on the item's id, not on its position or on earlier items."""
    return int(np.random.SeedSequence([seed, zlib.crc32(item_id.encode())]).generate_state(1)[0])


def synthesize_pairs(
    sources: str | Path,
    out: str | Path,
    ghosting: GhostingSource,
    size: int = 1024,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    attributes: Sequence[str] = PAPER_ATTRIBUTES,
    batch_size: int = 1,
    progress: bool = True,
) -> SynthesisReport:
    """Write (I, F_fused, F_train, M_face) for every image under `sources` into the dataset folder `out`.

    Pairs already in `out`'s manifest are skipped; unreadable sources are listed in skipped.json and
    in the report. `batch_size` images go to the ghosting source at once (grouped by attribute).
    """
    sources, out = Path(sources), Path(out)
    settings = {"source": ghosting.name, "size": size, "alpha": alpha, "seed": seed, "attributes": list(attributes)}
    _check_settings(out, settings)
    done = {entry["id"] for entry in read_manifest(out, missing_ok=True)}
    _drop_partial_line(out / "manifest.jsonl")
    files = list_images(sources)
    items = _items(sources, files)
    report = SynthesisReport(already_done=sum(item_id in done for item_id in items))
    pending = [(item_id, path) for item_id, path in items.items() if item_id not in done]
    with (out / "manifest.jsonl").open("a", encoding="utf-8") as manifest, tqdm(
        total=len(items), initial=report.already_done, desc="pairs", unit="pair", disable=not progress
    ) as bar:
        for start in range(0, len(pending), batch_size):
            chunk = []
            for item_id, path in pending[start : start + batch_size]:
                try:
                    chunk.append((item_id, path, square_image(read_image(path).rgb, size)))
                except ImageError as error:
                    report.skipped.append({"source": str(path), "reason": str(error)})
                    bar.update(1)
            for entry in _make_chunk(chunk, ghosting, out, settings):
                manifest.write(json.dumps(entry) + "\n")
                manifest.flush()
                report.made += 1
                bar.update(1)
    (out / "skipped.json").write_text(json.dumps(report.skipped, indent=1) + "\n", encoding="utf-8")
    return report


def _items(sources: Path, files: list[Path]) -> dict[str, Path]:
    """{id: path}; the id is the path under `sources` without its suffix, e.g. "00000/00017"."""
    items: dict[str, Path] = {}
    for path in files:
        item_id = path.relative_to(sources).with_suffix("").as_posix()
        if item_id in items:
            raise DatasetError(f"{items[item_id]} and {path} would both be pair {item_id!r}; rename one of them")
        items[item_id] = path
    return items


class _Item(NamedTuple):
    id: str
    source: Path
    image: np.ndarray  # RGB uint8 [size,size,3]
    seed: int
    attribute: str
    rng: np.random.Generator  # seeded by `seed`, after the attribute draw: the ghosting source's draws


def _make_chunk(chunk: list[tuple[str, Path, np.ndarray]], ghosting: GhostingSource, out: Path,
                settings: dict) -> list[dict]:
    """Ghost, blend and write a chunk of (id, path, image) items; returns their manifest entries."""
    items = []
    for item_id, path, image in chunk:
        seed = item_seed(settings["seed"], item_id)
        rng = np.random.default_rng(seed)
        items.append(_Item(item_id, path, image, seed, str(rng.choice(settings["attributes"])), rng))
    entries = []
    for attribute in dict.fromkeys(item.attribute for item in items):
        group = [item for item in items if item.attribute == attribute]
        ghosted = ghosting([item.image for item in group], attribute, settings["alpha"], [item.rng for item in group])
        for item, pair in zip(group, ghosted, strict=True):
            target = poisson_blend(pair.fused, item.image, pair.face_mask)
            files = {}
            for folder, pixels in zip(FOLDERS, (item.image, pair.fused, target, pair.face_mask), strict=True):
                files[folder] = f"{folder}/{item.id}.png"
                rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
                write_image(out / files[folder], rgb, overwrite=True)
            entries.append({"id": item.id, "source": str(item.source), "attribute": attribute,
                            "alpha": settings["alpha"], "seed": item.seed, **files})
    return entries


def _drop_partial_line(path: Path) -> None:
    """Cut a last line left unfinished by an interruption, so appended lines start on their own."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


def _check_settings(out: Path, settings: dict) -> None:
    recorded = out / "dataset.json"
    if recorded.is_file():
        previous = json.loads(recorded.read_text(encoding="utf-8"))
        if previous != settings:
            raise DatasetError(
                f"{out} was made with {previous}, not {settings}; continue it with the same settings or "
                "write the new dataset to another folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def read_manifest(folder: str | Path, missing_ok: bool = False) -> list[dict]:
    """The finished pairs of a dataset folder. A last line cut off by an interruption is ignored."""
    path = Path(folder) / "manifest.jsonl"
    if not path.is_file():
        if missing_ok:
            return []
        raise DatasetError(f"{path} does not exist; make the dataset first with `deghost train synthesize`")
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise DatasetError(f"{path}:{number} is not valid JSON; the manifest is damaged") from None
    return entries


class PairDataset(Dataset):
    """The pairs of a dataset folder as tensors, with optional random crops and flips.

    Item `key` is pair `key % len(self)`, augmented with a generator seeded by (seed, key): the
    trainer passes epoch·len + index, so each epoch crops differently, and a given step sees the
    same crops in any process count, worker count or resumed run.

    Returns {"image", "fused", "target"}: float32 [3,C,C] in [-1,1] (C = crop, or the image side).
    """

    def __init__(self, folder: str | Path, crop: int | None = None, flip: bool = False, seed: int = 0):
        self.folder = Path(folder)
        self.entries = read_manifest(self.folder)
        if not self.entries:
            raise DatasetError(f"{self.folder} holds no pairs yet; run `deghost train synthesize` into it")
        self.crop, self.flip, self.seed = crop, flip, seed

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        entry = self.entries[key % len(self.entries)]
        images = [read_image(self.folder / entry[name]).rgb for name in ("image", "fused", "target")]
        rng = np.random.default_rng([self.seed, key])
        height, width = images[0].shape[:2]
        if self.crop is not None:
            if self.crop > min(height, width):
                raise DatasetError(f"--crop {self.crop} is larger than the {width}x{height} images")
            top, left = rng.integers(0, height - self.crop + 1), rng.integers(0, width - self.crop + 1)
            images = [image[top : top + self.crop, left : left + self.crop] for image in images]
        if self.flip and rng.random() < 0.5:
            images = [image[:, ::-1] for image in images]
        return {name: _to_tensor(image) for name, image in zip(("image", "fused", "target"), images, strict=True)}


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H,W,3] → float32 [3,H,W] in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 127.5 - 1


class CheckedImageFolder(Dataset):
    """The training images of `deghost train stylegan2`, `psp` and `diffcam`: the files under a folder,
    each decoded once up front. Files that cannot be read are skipped and listed (`skipped`:
    {"source", "reason"}); the others are used as the pipeline's `to_model_input` rule sizes them —
    center-cropped to a square, then resized to `size` (INTER_AREA when shrinking, INTER_CUBIC when
    enlarging); grey and 16-bit files are converted by `read_image`.

    Item `key` is image `key % len(self)`, x-flipped when `flip` and a draw seeded by (seed, key)
    says so. Returns float32 [3,size,size] in [-1,1].
    """

    def __init__(self, folder: str | Path, size: int, flip: bool = False, seed: int = 0, progress: bool = True):
        self.size, self.flip, self.seed = size, flip, seed
        self.files: list[Path] = []
        self.skipped: list[dict] = []
        for path in tqdm(list_images(folder), desc="checking images", unit="image", disable=not progress):
            try:
                read_image(path)
            except Exception as error:  # noqa: BLE001 — OpenCV raises cv2.error too: one bad file never stops the run
                self.skipped.append({"source": str(path), "reason": str(error)})
                continue
            self.files.append(path)
        if not self.files:
            raise DatasetError(f"no readable images ({', '.join(IMAGE_SUFFIXES)}) under {folder}"
                               + (f"; {len(self.skipped)} files could not be read" if self.skipped else ""))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int) -> torch.Tensor:
        image = square_image(read_image(self.files[key % len(self.files)]).rgb, self.size)
        if self.flip and np.random.default_rng([self.seed, key]).random() < 0.5:
            image = image[:, ::-1]
        return _to_tensor(image)


def report_skipped(dataset: CheckedImageFolder, run: str | Path) -> None:
    """Write the files the dataset left out into <run>/skipped.json (an empty list when none) and say how many."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "skipped.json").write_text(json.dumps(dataset.skipped, indent=1) + "\n", encoding="utf-8")
    if dataset.skipped:
        print(f"{len(dataset.skipped)} unreadable images skipped, listed in {run / 'skipped.json'}")
