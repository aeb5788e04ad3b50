"""The demo's work without Gradio: one shared Pipeline, the edit of an uploaded photo, the views to show.

    session = DemoSession(Pipeline.load("engines/"))   # NoAttributesError when the folder has no direction
    view = session.edit(photo_rgb, attribute="smile", alpha=20.0, modes=["network", "eogi", "poisson"])
    panels = session.panels(view, overlays=["diffcam"])   # Figure 2: original | fused | EOGI | ours | Poisson

Requests share the one pipeline (opening its stages is the slow part); a lock keeps them one at a
time, since the pipeline opens stages lazily and the stages use every core anyway.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deghost.runtime.faces import NoFaceError
from deghost.runtime.grid import make_grid
from deghost.runtime.images import ImageError, TooLargeError, from_model_output, image_files, read_image, write_image
from deghost.runtime.limits import MAX_ALPHA, MAX_UPLOAD_BYTES
from deghost.runtime.pipeline import BLEND, GLUE, SUPPRESS_MODES, UNTRAINED_LABEL, FaceOptions, Pipeline

from .. import refusals
from .attributes import attribute_choices

# Figure 2's columns after the original, as (suppress mode, title); "none" is the fused image F_fused.
VIEW_MODES = (("none", "fused"), ("eogi", "EOGI"), ("network", "ours"), ("poisson", "Poisson"))
VIEW_TITLES = ("original", *(title for _, title in VIEW_MODES))
CHOOSABLE_MODES = tuple(mode for mode, _ in VIEW_MODES if mode != "none")  # fused is always shown
DEFAULT_MODES = ("network", "eogi", "poisson")
OVERLAYS = {"diffcam": "Diff-CAM mask", "face": "face mask"}
_OVERLAY_COLOURS = {"diffcam": (255, 64, 32), "face": (32, 160, 255)}
BUNDLED_SAMPLES = Path(__file__).resolve().parent / "samples"  # two public-domain photos, in the wheel too
KEEP_DOWNLOADS = 32  # clicks whose PNGs stay on disk; older ones are deleted (Gradio has served its copy)
SERVER_FAILURE = ("the edit failed on the server ({error}); the demo still serves: try again, or with fewer modes "
                  "or a smaller photo, and if it keeps failing see the server's log")
FAILURE_DETAIL = 300  # characters of the error shown on the page; the log has all of it

log = logging.getLogger(__name__)


@dataclass
class DemoEdit:
    """One click's result. Crops are the aligned faces the models saw (the first face, when several);
    `photos` are what gets downloaded: the whole photo with every face edited, or the edited crop (`--aligned`)."""

    name: str  # the photo's file stem, for download names
    label: str  # e.g. "smile+20"
    original: np.ndarray  # RGB uint8 [S,S,3] the aligned face as the models saw it
    crops: dict[str, np.ndarray]  # suppress mode ("none" = fused) → RGB uint8 [S,S,3]
    photos: dict[str, np.ndarray]  # suppress mode → RGB uint8, the photo's size (or the crop's)
    diffcam_mask: np.ndarray  # float32 [S,S] in [0,1]
    model_image: np.ndarray = field(repr=False)  # float32 [3,S,S], for the face mask
    model_fused: np.ndarray = field(repr=False)
    timings_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall clock of the edit call
    faces: int | None = None  # faces found in the photo, or None (`--aligned`: the upload is the face)
    warnings: list[str] = field(default_factory=list)
    face_mask: np.ndarray | None = None  # uint8 {0,255} [S,S], computed on first request


class DemoSession:
    """The one pipeline every request uses, and what the page needs from it."""

    def __init__(self, pipe: Pipeline, samples: Sequence[Path] = (), aligned: bool = False):
        choices, self.notes = attribute_choices(pipe)  # NoAttributesError before anything is made
        self._choices = {choice.key: choice for choice in choices}
        self.pipe, self.samples, self.aligned = pipe, list(samples), aligned
        self._lock = threading.Lock()
        self._downloads = Path(tempfile.mkdtemp(prefix="deghost-demo-"))
        self._clicks = itertools.count()

    @property
    def banner(self) -> str | None:
        return UNTRAINED_LABEL if self.pipe.untrained else None

    @property
    def attributes(self) -> list[str]:
        """The keys `edit` takes: the manifest's attributes, then directions/<file>.npy of unlisted files."""
        return list(self._choices)

    @property
    def attribute_choices(self) -> list[tuple[str, str]]:
        """(label, key) per attribute, for the page."""
        return [(choice.label, key) for key, choice in self._choices.items()]

    @property
    def finds_faces(self) -> bool:
        """True when uploads are ordinary photos whose faces are found, aligned and pasted back; False for
        FFHQ-aligned uploads (`--aligned`), edited as they are."""
        return not self.aligned

    def prepare(self) -> None:
        """Open every stage now, so the first click does not pay for it."""
        with self._lock:
            self.pipe.prepare(list(SUPPRESS_MODES))

    def read(self, path: str | Path) -> tuple[np.ndarray, list[str]]:
        """An uploaded file → (RGB uint8, warnings); ImageError names the file by its name only
        (uploads live under random temporary paths that mean nothing to the person). The service's
        limits hold here too: bytes before the file is read, pixels before it is decoded (TooLargeError)."""
        path = Path(path)
        try:
            size = path.stat().st_size if path.is_file() else 0
            if size > MAX_UPLOAD_BYTES:
                raise TooLargeError("", "bytes", size, MAX_UPLOAD_BYTES)
            loaded = read_image(path)
        except TooLargeError as error:
            raise TooLargeError(refusals.too_large(error, "web", path.name), error.what, error.amount, error.limit,
                                error.size) from None
        except ImageError as error:
            raise ImageError(str(error).replace(str(path), path.name)) from None
        return loaded.rgb, loaded.warnings

    def edit(self, photo: np.ndarray, attribute: str, alpha: float, modes: Sequence[str], name: str = "photo",
             faces: str = "all") -> DemoEdit:
        """Edit `photo` (RGB uint8 [H,W,3]) with every mode in `modes` plus the fused image; `faces`
        ("all" or "largest") is which faces of a photo to edit (not with `--aligned`).

        Raises ImageError (bad pixels, no face) or ValueError (unknown attribute or mode) with a message
        fit for the page."""
        if attribute not in self._choices:
            raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(self.attributes)}")
        if not np.isfinite(float(alpha)) or abs(float(alpha)) > MAX_ALPHA:  # what the service refuses too
            raise ValueError(refusals.alpha_out_of_range(alpha, "web"))
        modes = ["none", *dict.fromkeys(m for m in modes if m != "none")]
        with self._lock:
            started = time.perf_counter()
            try:
                result, photos, found = self._edit(photo, self._choices[attribute].source, float(alpha), modes,
                                                   faces)
            except NoFaceError as error:
                raise NoFaceError(refusals.no_face(error, "web", name), error.min_face, error.size) from None
            seconds = time.perf_counter() - started
        side = self.pipe.preset.image_size
        mask = result.mask[0, 0]
        return DemoEdit(
            name=name, label=result.edits[0].label, original=from_model_output(result.images[0]),
            crops={mode: result.rgb(mode)[0] for mode in modes}, photos=photos,
            diffcam_mask=cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST),
            model_image=result.images[0], model_fused=result.fused[0], timings_ms=dict(result.timings_ms),
            seconds=seconds, faces=found, warnings=list(result.warnings),
        )

    def _edit(self, photo, attribute, alpha, modes, faces):
        """The pipeline's edit_inputs takes the photo as a photo or an aligned crop (FaceOptions)."""
        done = self.pipe.edit_inputs([photo], attribute, alpha, modes, FaceOptions(self.aligned, faces))[0]
        if isinstance(done, ImageError):
            raise done
        found = len(done.faces) if self.finds_faces else None
        return done.result, {mode: done.photos[mode][0] for mode in modes}, found

    def panels(self, view: DemoEdit, overlays: Sequence[str] = ()) -> list[tuple[str, np.ndarray | None]]:
        """Figure 2's views (title, RGB uint8 or None when that mode was not run), with the masks drawn
        over every view that `overlays` ("diffcam", "face") asks for."""
        masks = []
        if "diffcam" in overlays:
            masks.append(("diffcam", view.diffcam_mask))
        if "face" in overlays:
            masks.append(("face", self.face_mask(view).astype(np.float32) / 255))
        shown = zip(VIEW_TITLES, [view.original, *(view.crops.get(mode) for mode, _ in VIEW_MODES)], strict=True)
        return [(title, None if image is None else _overlay(image, masks)) for title, image in shown]

    def face_mask(self, view: DemoEdit) -> np.ndarray:
        """The face-parser mask Poisson blending uses (face in both I and F_fused), cached on the view."""
        if view.face_mask is None:
            with self._lock:
                view.face_mask = self.pipe.face_mask(view.model_image, view.model_fused)
        return view.face_mask

    def downloads(self, view: DemoEdit) -> list[Path]:
        """The edited photo (`result_mode`'s) and the Figure 2 grid as PNGs in a fresh folder of their own."""
        mode = result_mode(view)
        for old in sorted(self._downloads.iterdir())[: -KEEP_DOWNLOADS + 1]:  # named in click order
            shutil.rmtree(old, ignore_errors=True)
        folder = self._downloads / f"{next(self._clicks):08d}"
        folder.mkdir()
        stem = f"{view.name}_{view.label}"
        grid = make_grid([(t, image) for t, image in self.panels(view) if image is not None], banner=self.banner)
        return [write_image(folder / f"{stem}_{mode}.png", view.photos[mode]),
                write_image(folder / f"{stem}_grid.png", grid)]

    def close(self) -> None:
        self.pipe.close()
        shutil.rmtree(self._downloads, ignore_errors=True)


def result_mode(view: DemoEdit) -> str:
    """The mode whose photo is the result: ours when it ran, else the first chosen, else the fused image."""
    return next((mode for mode in ("network", "eogi", "poisson") if mode in view.photos), "none")


def timings_text(view: DemoEdit) -> str:
    """`encoder 31 ms · generator 220 ms · … · total 0.61 s` with the stages in the order they ran."""
    stages = [(k, v) for k, v in view.timings_ms.items() if k not in (BLEND, GLUE)]
    stages += [(k, view.timings_ms[k]) for k in (BLEND, GLUE) if k in view.timings_ms]
    parts = " · ".join(f"{name} {ms:.0f} ms" for name, ms in stages)
    return f"{parts} · total {view.seconds:.2f} s"


def server_failure(error: BaseException) -> str:
    """The page's message for an edit that failed on the server's side (a backend error, memory, the disk),
    logged with its traceback; the person's own mistakes (ImageError, ValueError) have their own messages."""
    log.error("an edit failed: %s", error, exc_info=error)
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(detail) > FAILURE_DETAIL:
        detail = detail[:FAILURE_DETAIL] + "…"
    return SERVER_FAILURE.format(error=detail)


def find_samples(folders: Sequence[Path]) -> list[Path]:
    """The sample photos offered beside the upload: image files of the given folders, by name; a file
    name already offered by an earlier folder is not offered again (the menu shows names)."""
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            for path in image_files(folder):
                found.setdefault(path.name, path)
    return list(found.values())


def _overlay(image: np.ndarray, masks: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Each mask ([S,S] in [0,1]) tinted over the image at half strength, in its own colour."""
    out = image.astype(np.float32)
    for kind, mask in masks:
        weight = 0.5 * mask[..., None]
        out = out * (1 - weight) + np.float32(_OVERLAY_COLOURS[kind]) * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
