"""The editing pipeline over the exported stages (docs/design.md §1, §5), torch-free.

    encoder(I) → w;  w_edit = w + α·n̂;  generator(concat[w, w_edit]) → I', T (+ 256² copies)
    diffcam(I'₂₅₆, T₂₅₆, class) → M;  then one or more suppress modes:
      network: suppressor(I, T, M) → F_fused, out        eogi: deghosting(I, T, M) → F_fused, out
      poisson: face_parser(F_fused), face_parser(I) → M_face;  out = seamlessClone(F_fused → I, M_face)
      none:    out = F_fused = T·M + I·(1−M)

    pipe = Pipeline.load("engines/", backend="auto")
    result = pipe.edit(images, attribute="smile", alpha=20.0, suppress="network")
    result.output  # [N,3,S,S] float32 in [-1,1];  result.rgb() → [N,S,S,3] uint8

Ordinary photos go through `edit_photo` (`edit_photos` for several, their faces in one batch): faces
found, FFHQ-aligned to S², edited as one batch and pasted back (see deghost.runtime.faces); `edit`
takes already aligned faces. `edit_inputs` takes either, as `FaceOptions` says: the one place where an
input is taken as an ordinary photo or as an aligned crop (`crops`), and its edit is pasted back into
the photo or given as the crop (`edited`); every application goes through it. Batches are run in
chunks of at most `max_rows` rows per stage.

Several attributes and alphas run in one call: the edits are every attribute at every alpha, and
result row i·K + k is image i with edit k. Inside, rows are ordered edit-major so each image's
reconstruction is rendered once and the generator's outputs reach the next stages as row views.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deghost.attributes import find_attribute
from deghost.files import sha256_of
from deghost.manifest import Manifest, ManifestError, build_command
from deghost.presets import get_preset
from deghost.stages import stage_table

from .backends import Backend, BackendError, DeviceTensor, choice_table, computes_in, open_backend
from .backends.compiled_cache import open_cache
from .blend import face_mask, mix, poisson_blend
from .directions import DEFAULT_ALPHA, apply_direction, direction_class, load_direction
from .faces import MIN_FACE, Face, FaceChoice, FaceFinder, paste_faces, too_many_faces
from .images import ImageError, from_model_output, to_model_input
from .results import Edit, EditResult, PhotoResult, Rendered
from .timing import add_timings, timed

Images = np.ndarray | Sequence[np.ndarray]  # see Pipeline.edit
SUPPRESS_MODES = ("network", "poisson", "eogi", "none")
SUPPRESS_STAGES = {"network": "suppressor", "eogi": "deghosting", "poisson": "face_parser", "none": None}
log = logging.getLogger("deghost.runtime")
UNTRAINED_LABEL = "untrained weights: timings and plumbing only"
GLUE = "glue"  # timing key: everything outside the backends and the blend (conversions, copies, fusion)
BLEND = "blend"  # timing key: face masks and seamlessClone
FACES = "faces"  # timing key (edit_photo): face detection, landmarks and alignment
PASTE = "paste"  # timing key (edit_photo): pasting the edited faces back into the photo
# The most rows (images, edits) a stage runs at once where its engine sets no limit (ONNX Runtime, OpenVINO),
# in pixels: 8 rows at 1024² (4 faces and their edits in one generator batch; one face with 3 edits, 4 rows,
# peaked at 3.1 GB on the CPU), 128 at 256². A group photo's many faces go through in chunks of this.
MAX_BATCH_PIXELS = 8 * 1024 * 1024


@dataclass(frozen=True)
class FaceOptions:
    """What an input image is: by default an ordinary photo whose faces are found (`faces`: "all", "largest"
    or face N left to right, each of at least `min_face` px), aligned, edited and pasted back; with `aligned`
    an FFHQ-aligned face crop, edited as it is (centre-cropped and resized to the preset's side, with a
    warning, where it is not square at that side)."""

    aligned: bool = False
    faces: FaceChoice = "all"
    min_face: float = MIN_FACE


@dataclass
class Crops:
    """One input image as the pipeline takes it (`Pipeline.crops`): its aligned faces as model input and the
    photo they go back into, or (`photo` None) the input as its own aligned crop."""

    tensor: np.ndarray | None  # float32 [rows,3,S,S] in [-1,1]; a caller may drop it (None) once it has run
    photo: np.ndarray | None  # RGB uint8 [H,W,3] the faces are pasted back into; None for an aligned crop
    faces: list[Face]  # the photo's faces, in row order (empty for an aligned crop)
    warnings: list[str]  # e.g. an aligned crop that had to be resized
    ms: float  # time taken to find and align the faces (or to convert the crop)

    @property
    def rows(self) -> int:
        """Images this input adds to a pipeline batch: one per face, or the crop itself."""
        return 1 if self.photo is None else len(self.faces)


class Pipeline:
    """The stages of one engine folder, opened on first use (see the module docstring).

    Threads may share one Pipeline (a threaded web server, a worker pool): stages are opened once under a
    lock, ONNX Runtime and OpenVINO run calls from several threads at once (OpenVINO with one infer request
    per concurrent call over one compiled graph), and a pipeline holding a backend that cannot (TensorRT)
    runs one edit at a time. Processes do not share one: each opens its own (the compiled-model cache
    spares them the compile)."""

    def __init__(self, manifest: Manifest, backend: str = "auto", threads: int | None = None,
                 precision: str | None = None, memory_arena: bool = False, device: str = "auto",
                 max_rows: int | None = None, cache: str | Path | bool | None = None):
        if not manifest.artifacts:
            raise ManifestError(
                f"{manifest.path} lists nothing; build it: {build_command(manifest.folder)}"
            )
        presets = {artifact.preset for artifact in manifest.artifacts}
        if len(presets) != 1:
            raise ManifestError(f"{manifest.path} mixes presets {sorted(presets)}; rebuild all stages with one")
        self.manifest, self.preset = manifest, get_preset(presets.pop())
        self.backend_name, self.threads, self.precision, self.device = backend, threads, precision, device
        self.memory_arena = memory_arena  # ONNX Runtime's CPU arena: keeps activations resident
        self.max_rows = max_rows or max(2, MAX_BATCH_PIXELS // self.preset.image_size**2)
        if self.max_rows < 2:
            raise ValueError(f"max_rows must be at least 2 (the generator renders an image and its edit in one "
                             f"batch); got {max_rows}")
        self._backends: dict[str, Backend] = {}
        self._face_finder: FaceFinder | None = None
        self._directions: dict[str, tuple[np.ndarray, int | None]] = {}
        self._reported: set[str] = set()  # stages whose backend choice has been logged
        self.cache = open_cache(cache)  # compiled stages on disk; None when turned off
        self._opening = threading.RLock()  # stages, directions and the face finder are opened once
        self._one_edit_at_a_time = threading.Lock()  # for backends that are not `concurrent`
        self._warming: Future | None = None

    @classmethod
    def load(cls, folder: str | Path = "engines", backend: str = "auto", threads: int | None = None,
             precision: str | None = None, memory_arena: bool = False, device: str = "auto",
             max_rows: int | None = None, cache: str | Path | bool | None = None) -> Pipeline:
        """The pipeline of the engines and graphs listed in `folder`/manifest.json.

        backend: "auto", "tensorrt", "onnxruntime" or "openvino"; device: "auto", "cpu" or "cuda";
        precision: "auto" (None), "fp32", "fp16" or "bf16" (see `deghost.runtime.backends.open_backend`);
        max_rows: the most rows a stage runs at once (default: MAX_BATCH_PIXELS at the preset's side; an
        engine's own profile limit, where smaller, still holds); cache: the compiled-model cache's folder
        (None: $DEGHOST_CACHE_DIR or the user's cache folder; False: off, as $DEGHOST_NO_CACHE=1 does)."""
        return cls(Manifest.load(folder), backend, threads, precision, memory_arena, device, max_rows, cache)

    # -- what the folder holds ----------------------------------------------------------------------

    @property
    def untrained(self) -> bool:
        """True when any network or direction of the folder is randomly initialised."""
        directions = (str(entry.get("source", "")) for entry in self.manifest.directions.values())
        return any(a.untrained for a in self.manifest.artifacts) or any(s.startswith("untrained") for s in directions)

    @property
    def attributes(self) -> list[str]:
        """The attributes with a direction in the manifest."""
        return sorted(self.manifest.directions)

    def backend(self, stage: str) -> Backend:
        """The stage's backend, opened on first use (see `open_backend`)."""
        opened = self._backends.get(stage)
        if opened is None:
            with self._opening:
                if stage not in self._backends:
                    self._backends[stage] = open_backend(self.manifest, stage, self.backend_name, self.precision,
                                                         self.threads, self.memory_arena, self.device, self.cache)
                opened = self._backends[stage]
        return opened

    def prepare(self, suppress: str | Sequence[str] = "network", warm: tuple[int, int] | None = None
                ) -> dict[str, str]:
        """Open every stage the suppress modes need now (and only those), so configuration errors come
        before any work, and log the choice (`choice_table`) of the stages not reported yet; returns
        `describe()`. `warm` (images, edits per image): also start `warm_up` in the background (each stage
        compiled or imported for the batch such a call runs) while the caller decodes photos and finds
        faces; the next `run` waits for it. No modes (an empty list): the stages `render` needs alone."""
        modes = _modes(suppress) if suppress else []
        with self._opening:
            for stage in self._stages_for(modes):
                self.backend(stage)
            new = {stage: b for stage, b in self._backends.items() if stage not in self._reported}
            if new:
                log.info("backends:\n%s", choice_table(new))
                self._reported.update(new)
            if warm is not None and self._warming is None:
                pool = ThreadPoolExecutor(1, thread_name_prefix="deghost-warm-up")
                self._warming = pool.submit(self.warm_up, modes, *warm)
                pool.shutdown(wait=False)  # the thread ends with the warm-up
        return self.describe()

    def warm_up(self, suppress: str | Sequence[str] = "network", images: int = 1, edits: int = 1) -> None:
        """Compile (or import from the cache) each OpenVINO stage the modes need for the batch an edit of
        `images` aligned faces with `edits` edits runs. No inference: once compiled, OpenVINO's first
        inference costs what later ones do (docs/cache.md), and ONNX Runtime and TensorRT compile on open."""
        modes = _modes(suppress)
        group, edit_group = self._chunk_shape(images, edits, modes)
        rows = stage_rows(group, edit_group)
        specs = stage_table(self.preset.name)
        for stage in self._stages_for(modes):
            backend = self.backend(stage)
            if backend.kind != "openvino":
                continue
            shapes = {spec.name: list(spec.concrete_shape(rows[stage])) for spec in specs[stage].inputs}
            try:
                backend.compile_for(shapes)
            except BackendError as error:  # the real run reports it where it belongs
                log.debug("%s: warm-up failed: %s", stage, error)

    def _wait_for_warm_up(self) -> None:
        warming = self._warming
        if warming is not None and not warming.done():
            warming.exception()  # waits; a failed warm-up is the real run's to report

    def describe(self) -> dict[str, str]:
        """Each opened stage → "kind/device precision", e.g. "onnxruntime/cpu fp32", "openvino/cpu bf16"."""
        return {stage: f"{b.kind}/{b.device} {computes_in(b)}" for stage, b in self._backends.items()}

    @staticmethod
    def _stages_for(modes: Sequence[str]) -> list[str]:
        return ["encoder", "generator", "diffcam"] + [SUPPRESS_STAGES[m] for m in modes if SUPPRESS_STAGES[m]]

    def close(self) -> None:
        self._wait_for_warm_up()
        with self._opening:
            for backend in self._backends.values():
                backend.close()
            self._backends, self._reported, self._warming = {}, set(), None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- edits --------------------------------------------------------------------------------------

    def edits(self, attribute: str | Sequence[str] = "smile", alpha: float | Sequence[float] = DEFAULT_ALPHA,
              class_index: int | None = None) -> list[Edit]:
        """Every attribute at every alpha, attribute-major. An attribute is a name listed in the
        manifest's directions or the path of a direction `.npy`; `class_index` overrides the Diff-CAM
        class (default: the attribute table's class for a known name, else see `Edit`)."""
        attributes = [attribute] if isinstance(attribute, (str, Path)) else list(attribute)
        alphas = [alpha] if np.isscalar(alpha) else list(alpha)
        if not attributes or not alphas:
            raise ValueError("give at least one attribute and one alpha")
        if not all(np.isfinite(a) for a in alphas):
            raise ValueError(f"alpha must be finite; got {alphas}")
        if class_index is not None and not 0 <= class_index < self.preset.n_classes:
            raise ValueError(f"class_index must be in [0, {self.preset.n_classes}); got {class_index}")
        edits = []
        for name in map(str, attributes):
            direction, known_class = self._direction(name)
            label = Path(name).stem if name not in self.manifest.directions else name
            for a in alphas:
                edits.append(Edit(label, float(a), known_class if class_index is None else class_index, direction))
        return edits

    def _direction(self, name: str) -> tuple[np.ndarray, int | None]:
        with self._opening:
            return self._direction_opened(name)

    def _direction_opened(self, name: str) -> tuple[np.ndarray, int | None]:
        if name not in self._directions:
            entry = self.manifest.directions.get(name)
            if entry is not None:
                path = self.manifest.folder / entry["file"]
                if "sha256" in entry and path.is_file() and sha256_of(path) != entry["sha256"]:
                    raise ManifestError(f"direction {path} does not match its sha256 in {self.manifest.path}")
                attribute = find_attribute(name)
                known = entry.get("class_index", attribute.class_index if attribute else None)
            elif name.endswith(".npy") or Path(name).is_file():
                path = Path(name)
                known = direction_class(path) if path.is_file() else None
            else:
                raise ValueError(
                    f"unknown attribute {name!r}; available: {', '.join(self.attributes) or '(none in the manifest)'}"
                    ", or the path of a direction .npy"
                )
            self._directions[name] = (load_direction(path, self.preset.n_latent, self.preset.style_dim), known)
        return self._directions[name]

    def edit(self, images: Images, attribute: str | Sequence[str] = "smile",
             alpha: float | Sequence[float] = DEFAULT_ALPHA, suppress: str | Sequence[str] = "network",
             class_index: int | None = None) -> EditResult:
        """Edit `images` with every attribute at every alpha, and suppress ghosting with each mode.

        images: one RGB uint8 [H,W,3] array or a list of them (center-cropped and resized to the preset's
        side, with warnings), or float32 [B,3,S,S] / [3,S,S] in [-1,1] at the preset's side S.
        suppress: "network", "poisson", "eogi", "none", or a list of them (they share the generation).
        """
        return self.run(images, self.edits(attribute, alpha, class_index), suppress)

    @property
    def face_finder(self) -> FaceFinder:
        """Face detector and landmarker (ONNX Runtime on the CPU), opened on first use."""
        with self._opening:
            if self._face_finder is None:
                self._face_finder = FaceFinder()
            return self._face_finder

    def find_faces(self, photo: np.ndarray, faces: FaceChoice = "all", min_face: float = MIN_FACE) -> list[Face]:
        """The chosen faces of an RGB uint8 [H,W,3] photo, FFHQ-aligned at the preset's side, left to right.
        Raises NoFaceError when there is none."""
        return self.search_faces(photo, faces, min_face)[0]

    def search_faces(self, photo: np.ndarray, faces: FaceChoice = "all", min_face: float = MIN_FACE
                     ) -> tuple[list[Face], int]:
        """`find_faces`, and how many faces were found beyond the MAX_FACES largest (left unedited)."""
        return self.face_finder.search(photo, self.preset.image_size, faces, min_face)

    def edit_photo(self, photo: np.ndarray, attribute: str | Sequence[str] = "smile",
                   alpha: float | Sequence[float] = DEFAULT_ALPHA, suppress: str | Sequence[str] = "network",
                   faces: FaceChoice = "all", min_face: float = MIN_FACE, class_index: int | None = None
                   ) -> PhotoResult:
        """Edit the faces of an ordinary photo (RGB uint8 [H,W,3]): find them (every face of at least
        `min_face` px, or "largest", or face number N left to right), align them, edit them as one batch
        like `edit`, and paste each edit back. Raises NoFaceError (an ImageError) when there is no face."""
        done = self.edit_photos([photo], attribute, alpha, suppress, faces, min_face, class_index)[0]
        if isinstance(done, ImageError):
            raise done
        return done

    def edit_photos(self, photos: Sequence[np.ndarray], attribute: str | Sequence[str] = "smile",
                    alpha: float | Sequence[float] = DEFAULT_ALPHA, suppress: str | Sequence[str] = "network",
                    faces: FaceChoice = "all", min_face: float = MIN_FACE, class_index: int | None = None
                    ) -> list[PhotoResult | ImageError]:
        """`edit_photo` for several photos, with the faces of all of them edited as one batch (chunked as
        `run` chunks): per photo its PhotoResult, or the ImageError (NoFaceError: no face) that is its
        alone. Configuration errors (unknown attribute or mode) raise before any face is looked for."""
        return self.edit_inputs(photos, attribute, alpha, suppress, FaceOptions(False, faces, min_face), class_index)

    def edit_inputs(self, images: Sequence[np.ndarray], attribute: str | Sequence[str] = "smile",
                    alpha: float | Sequence[float] = DEFAULT_ALPHA, suppress: str | Sequence[str] = "network",
                    options: FaceOptions | None = None, class_index: int | None = None
                    ) -> list[PhotoResult | ImageError]:
        """RGB uint8 images, photos or aligned crops as `options` says, edited as one batch: per input its
        PhotoResult (for an aligned crop, `photos` are the edited crops and `faces` is empty), or the ImageError
        that is its alone (no face, unusable pixels). Configuration errors raise before any input is read."""
        edits, modes = self.edits(attribute, alpha, class_index), _modes(suppress)
        self.prepare(modes, warm=(len(images), len(edits)))  # warms up while the faces are searched for
        prepared = [self._crops_or_error(image, options or FaceOptions()) for image in images]
        ready = [crops for crops in prepared if isinstance(crops, Crops)]
        result = self.run(np.concatenate([crops.tensor for crops in ready]), edits, modes) if ready else None
        done: list[PhotoResult | ImageError] = []
        first = 0
        for crops in prepared:
            if isinstance(crops, ImageError):
                done.append(crops)
                continue
            own = result.for_images(first, crops.rows)
            own.warnings = list(crops.warnings)
            if crops.photo is not None:
                own.timings_ms[FACES] = crops.ms
            done.append(PhotoResult(photos=self.edited(crops, own), faces=crops.faces, result=own))
            first += crops.rows
        return done

    def crops(self, image: np.ndarray, options: FaceOptions) -> Crops:
        """RGB uint8 [H,W,3] → its Crops: the photo's chosen faces, FFHQ-aligned at the preset's side, or (with
        `options.aligned`) the image itself as the crop. Raises ImageError (NoFaceError: no face)."""
        started, side = time.perf_counter(), self.preset.image_size
        if options.aligned:
            tensor, warnings = to_model_input(image, side)
            return Crops(tensor, None, [], warnings, (time.perf_counter() - started) * 1e3)
        faces, left_out = self.search_faces(image, options.faces, options.min_face)
        tensor = np.concatenate([to_model_input(face.crop, side)[0] for face in faces])
        warnings = [too_many_faces(left_out)] if left_out else []
        return Crops(tensor, image, faces, warnings, (time.perf_counter() - started) * 1e3)

    def _crops_or_error(self, image: np.ndarray, options: FaceOptions) -> Crops | ImageError:
        try:
            return self.crops(image, options)
        except ImageError as error:  # NoFaceError included: this input's problem, not the others'
            return error

    def edited(self, crops: Crops, result: EditResult, first: int = 0) -> dict[str, list[np.ndarray]]:
        """suppress mode → per edit the input as edited, RGB uint8: the photo with its faces pasted back, or the
        edited crop; the input's images are `result`'s images first, first + 1, …"""
        if crops.photo is not None:
            return self.paste(crops.photo, crops.faces, result, first)
        rows = [result.row(first, k) for k in range(len(result.edits))]
        return {mode: list(from_model_output(out[rows])) for mode, out in result.outputs.items()}

    def paste(self, photo: np.ndarray, faces: Sequence[Face], result: EditResult, first: int = 0
              ) -> dict[str, list[np.ndarray]]:
        """suppress mode → one copy of `photo` per edit with the faces' edited crops pasted back; the faces
        are `result`'s images first, first + 1, …; adds the time to result.timings_ms[PASTE]."""
        photos = {}
        with timed(result.timings_ms, PASTE):
            for mode in result.outputs:
                rgb = result.rgb(mode)
                photos[mode] = [paste_faces(photo, [rgb[result.row(first + i, k)] for i in range(len(faces))],
                                            list(faces)) for k in range(len(result.edits))]
        return photos

    def invert(self, images: Images) -> np.ndarray:
        """The encoder's latents w [B,n_latent,512] of `images` (see `edit`), `max_rows` at a time: the first
        stage alone, for callers that change w before the rest (a video steadies it over time)."""
        batch = self.model_batch(images)[0]
        step = min(self.backend("encoder").max_batch or self.max_rows, self.max_rows)
        return np.concatenate([_host(self.backend("encoder").run({"image": batch[i : i + step]})["w"])
                               for i in range(0, len(batch), step)])

    def render(self, images: Images, edits: Sequence[Edit], given_w: np.ndarray | None = None) -> Rendered:
        """The first half of `run`: latents (the encoder's, or `given_w`), edits T and Diff-CAM masks, on the
        host; `suppress` finishes them. For callers that change the masks in between (a clip steadies them
        over time); `run` does both halves at once and keeps the data on the device where it can."""
        edits = list(edits)
        batch, warnings, w, merged, timings = self._edit_rows(images, edits, [], given_w)
        return Rendered(batch, merged["edit"], merged["mask"], merged["logits"], merged["class_index"], w,
                        merged["w_edit"], edits, timings, warnings)

    def suppress(self, rendered: Rendered, suppress: str | Sequence[str] = "network",
                 mask: np.ndarray | None = None) -> EditResult:
        """The second half of `run`: fuse each edit into its image with `mask` (default: the rendered Diff-CAM
        masks; float32 [N,1,m,m] in [0,1]) and suppress the ghosting with each mode."""
        started = time.perf_counter()
        modes = _modes(suppress)
        self.prepare(modes)
        mask = rendered.mask if mask is None else np.ascontiguousarray(mask, np.float32)
        if mask.shape != rendered.mask.shape:
            raise ValueError(f"masks {mask.shape} for rendered masks {rendered.mask.shape}")
        timer, n_edits, rows = _Timer(), len(rendered.edits), len(rendered.edit)
        step, parts = self._suppress_rows(modes), []
        with self._exclusive(modes):
            for r0 in range(0, rows, step):
                indices = np.arange(r0, min(r0 + step, rows))
                first = indices[0] // n_edits
                images = rendered.images[first : indices[-1] // n_edits + 1]
                chunk = self._suppress_chunk(images, indices // n_edits - first, rendered.edit[indices], mask[indices],
                                             modes, timer)
                parts.append((indices, {name: _host(value) for name, value in chunk.items()}))
        merged = _merge_rows(parts, rows)
        timings = {**rendered.timings_ms}
        add_timings(timings, timer.ms)
        timings[GLUE] = timings.get(GLUE, 0.0) + (time.perf_counter() - started) * 1e3 - sum(timer.ms.values())
        return EditResult(
            images=rendered.images, outputs={mode: merged[f"out:{mode}"] for mode in modes}, fused=merged["fused"],
            mask=mask, logits=rendered.logits, class_index=rendered.class_index, w=rendered.w,
            w_edit=rendered.w_edit, edits=rendered.edits, timings_ms=timings, untrained=self.untrained,
            warnings=list(rendered.warnings),
        )

    def _suppress_rows(self, modes: list[str]) -> int:
        """Rows per `suppress` chunk: every suppress stage's batch within its engine profile and `max_rows`
        (the face parser sees each row and, at most, as many images more)."""
        step = self.max_rows
        for mode in modes:
            stage = SUPPRESS_STAGES[mode]
            if stage:
                limit = min(self.backend(stage).max_batch or self.max_rows, self.max_rows)
                step = min(step, limit // 2 if stage == "face_parser" else limit)
        return max(step, 1)

    def _latents(self, images: np.ndarray, given_w: np.ndarray | None, first: int, timer: _Timer) -> np.ndarray:
        if given_w is not None:
            return np.ascontiguousarray(given_w[first : first + len(images)], np.float32)
        with timer("encoder"):
            return _host(self.backend("encoder").run({"image": images})["w"])

    def run(self, images: Images, edits: Sequence[Edit], suppress: str | Sequence[str] = "network",
            given_w: np.ndarray | None = None) -> EditResult:
        """`edit` with the edits already resolved by `edits(...)` (folder mode resolves them once); `given_w`
        [B,n_latent,512], where given, are the images' w instead of the encoder's (see `invert`)."""
        modes, edits = _modes(suppress), list(edits)
        batch, warnings, w, merged, timings = self._edit_rows(images, edits, modes, given_w)
        return EditResult(
            images=batch, outputs={mode: merged[f"out:{mode}"] for mode in modes}, fused=merged["fused"],
            mask=merged["mask"], logits=merged["logits"], class_index=merged["class_index"], w=w,
            w_edit=merged["w_edit"], edits=edits, timings_ms=timings, untrained=self.untrained, warnings=warnings,
        )

    def _edit_rows(self, images: Images, edits: list[Edit], modes: list[str], given_w: np.ndarray | None
                   ) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        """`run` and `render`'s work: the images × edits in chunks that fit every stage → (the model batch, its
        warnings, latents w, each chunk's arrays merged into image-major rows, timings). No modes: rendered
        edits and masks only."""
        started = time.perf_counter()
        self.prepare(modes)
        self._wait_for_warm_up()
        batch, warnings = self.model_batch(images)
        if given_w is not None and len(given_w) != len(batch):
            raise ValueError(f"{len(given_w)} latents for {len(batch)} images")
        timer, n_images, n_edits = _Timer(), len(batch), len(edits)
        group, edit_group = self._chunk_shape(n_images, n_edits, modes)
        latents, parts = [], []
        with self._exclusive(modes):
            for i0 in range(0, n_images, group):
                images_i = batch[i0 : i0 + group]
                w = self._latents(images_i, given_w, i0, timer)
                latents.append(w)
                for k0 in range(0, n_edits, edit_group):
                    chunk = self._edit_chunk(images_i, w, edits[k0 : k0 + edit_group], modes, timer)
                    # chunk rows are edit-major (kk·g + ii); result rows image-major ((i0 + ii)·K + k0 + kk)
                    kk, ii = np.divmod(np.arange(len(chunk["mask"])), len(images_i))
                    parts.append(((i0 + ii) * n_edits + k0 + kk, chunk))
        merged = _merge_rows(parts, n_images * n_edits)
        timings = timer.ms
        timings[GLUE] = (time.perf_counter() - started) * 1e3 - sum(timings.values())
        return batch, warnings, np.concatenate(latents), merged, timings

    def _exclusive(self, modes: list[str]):
        """The pipeline's one-edit-at-a-time lock where a stage cannot run from several threads at once (its
        outputs left on the device live in buffers the next run overwrites); else nothing."""
        shared = all(self.backend(stage).concurrent for stage in self._stages_for(modes))
        return nullcontext() if shared else self._one_edit_at_a_time

    def _edit_chunk(self, images: np.ndarray, w: np.ndarray, edits: list[Edit], modes: list[str],
                    timer: _Timer) -> dict[str, np.ndarray]:
        """g images × k edits → host arrays, rows edit-major (row kk·g + ii); no modes: the edits T and their masks
        as rendered (`render`)."""
        rendered = self._render_chunk(w, edits, timer)
        if not modes:
            return {name: _host(value) for name, value in rendered.items()}
        source = np.tile(np.arange(len(images)), len(edits))  # the image of each edited row
        suppressed = self._suppress_chunk(images, source, rendered["edit"], rendered["mask"], modes, timer)
        return {**suppressed, "logits": rendered["logits"], "class_index": rendered["class_index"],
                "w_edit": rendered["w_edit"]}

    def _render_chunk(self, w: np.ndarray, edits: list[Edit], timer: _Timer) -> dict:
        """g latents × k edits → edits T and Diff-CAM masks (left on the device where the backend keeps them),
        logits, classes and edited latents; rows edit-major (row kk·g + ii)."""
        g, k = len(w), len(edits)
        w_edit = np.concatenate([apply_direction(w, e.direction, e.alpha) for e in edits])
        with timer("generator"):
            # One batch: reconstructions I' (rows 0..g−1) and edits T (rows g..g+k·g−1).
            rendered = self.backend("generator").run({"w": np.concatenate([w, w_edit])}, keep={"image", "image256"})
        source = np.tile(np.arange(g), k)  # the image of each edited row
        edit_rows = np.arange(g, g + k * g)
        feeds = {"recon256": _take(rendered["image256"], source), "edit256": _take(rendered["image256"], edit_rows)}
        classes = np.repeat([-1 if e.class_index is None else e.class_index for e in edits], g).astype(np.int64)
        with timer("diffcam"):
            cam = self.backend("diffcam").run({**feeds, "class_index": np.maximum(classes, 0)}, keep={"mask"})
            logits = _host(cam["logits"])
            if (classes < 0).any():  # a class chosen by the logits themselves: the mask is for that class
                classes = np.where(classes < 0, logits.argmax(1), classes)
                cam = self.backend("diffcam").run({**feeds, "class_index": classes}, keep={"mask"})
        return {"edit": _take(rendered["image"], edit_rows), "mask": cam["mask"], "logits": logits,
                "class_index": classes, "w_edit": w_edit}

    def _suppress_chunk(self, images: np.ndarray, source: np.ndarray, edit, mask, modes: list[str],
                        timer: _Timer) -> dict[str, np.ndarray]:
        """Rows (edit T, mask M, each of image `source[row]` of `images`) → each mode's output, F_fused and the
        mask on the host."""
        image_rows = images[source]
        outputs, fused = {}, None
        for mode in modes:
            if mode in ("network", "eogi"):
                stage = SUPPRESS_STAGES[mode]
                with timer(stage):
                    out = self.backend(stage).run({"image": image_rows, "edit": edit, "mask": mask})
                outputs[f"out:{mode}"] = out["output"]
                fused = out["fused"] if fused is None else fused
        mask = _host(mask)
        if fused is None:
            fused = fuse(image_rows, _host(edit), mask)
        if "none" in modes:
            outputs["out:none"] = fused
        if "poisson" in modes:
            outputs["out:poisson"] = self._poisson(images, fused, source, timer)
        return {**outputs, "fused": fused, "mask": mask}

    def _poisson(self, images: np.ndarray, fused: np.ndarray, source: np.ndarray, timer: _Timer) -> np.ndarray:
        """seamlessClone(F_fused → I, M_face) per row; images [g,3,S,S], fused [N,3,S,S], source [N]."""
        labels = self._labels(np.concatenate([fused, images]), timer)  # fused rows first, then each image once
        side = self.preset.image_size
        with timer(BLEND):
            return poisson_rows(fused, images, labels, source, side)

    def _chunk_shape(self, n_images: int, n_edits: int, modes: list[str]) -> tuple[int, int]:
        """(images, edits) per chunk so every stage's batch fits its engine profile and `max_rows`."""
        engine = {stage: self.backend(stage).max_batch for stage in self._stages_for(modes)}
        limit = {stage: min(value or self.max_rows, self.max_rows) for stage, value in engine.items()}

        def fits(g: int, k: int) -> bool:
            batches = stage_rows(g, k)
            return all(batches[s] <= v for s, v in limit.items())

        shapes = [(g, k) for k in range(1, n_edits + 1) for g in range(1, n_images + 1) if fits(g, k)]
        if not shapes:
            raise ManifestError(
                f"engine batch limits {engine} cannot hold one image and its edit (the generator renders both in "
                "one batch, so it needs a maximum batch of at least 2); rebuild the engines with larger profiles"
            )
        return max(shapes, key=lambda gk: (gk[0] * gk[1], gk[1]))

    # -- images and face masks ----------------------------------------------------------------------

    def model_batch(self, images: Images) -> tuple[np.ndarray, list[str]]:
        """images (see `edit`) → (float32 [B,3,S,S] in [-1,1], warnings)."""
        side = self.preset.image_size
        if isinstance(images, np.ndarray) and images.dtype == np.uint8:
            images = [images]
        if isinstance(images, (list, tuple)):
            if not images:
                raise ImageError("no images given")
            converted = [to_model_input(image, side) for image in images]
            return np.concatenate([tensor for tensor, _ in converted]), [w for _, ws in converted for w in ws]
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        if array.dtype != np.float32 or array.ndim != 4 or array.shape[1:] != (3, side, side) or not len(array):
            raise ImageError(
                f"images must be RGB uint8 [H,W,3] (or a list of them) or float32 [B,3,{side},{side}] in [-1,1]; "
                f"got {array.dtype} {array.shape}"
            )
        return np.ascontiguousarray(array), []

    def face_labels(self, images: np.ndarray) -> np.ndarray:
        """images float32 [B,3,S,S] in [-1,1] → BiSeNet classes int64 [B,P,P] (P = parser side)."""
        return self._labels(self.model_batch(images)[0], _Timer())

    def _labels(self, images: np.ndarray, timer: _Timer) -> np.ndarray:
        with timer("face_parser"):
            return _host(self.backend("face_parser").run({"image": area_downsample(images, self.preset.parser_size)})
                         ["labels"])

    def face_mask(self, image: np.ndarray, fused: np.ndarray) -> np.ndarray:
        """Face pixels in both I and F_fused: float32 [3,S,S] or [B,3,S,S] each in [-1,1] → uint8 {0,255}
        [S,S] or [B,S,S] (training's targets are poisson_blend(F_fused → I, this mask))."""
        single = np.ndim(image) == 3
        image, fused = self.model_batch(image)[0], self.model_batch(fused)[0]
        if image.shape != fused.shape:
            raise ImageError(f"face_mask: image {image.shape} and fused {fused.shape} differ in shape")
        labels = self.face_labels(np.concatenate([fused, image]))
        n, side = len(image), self.preset.image_size
        masks = np.stack([face_mask(labels[b], labels[n + b], size=side) for b in range(n)])
        return masks[0] if single else masks


def stage_rows(images: int, edits: int) -> dict[str, int]:
    """stage → its batch when `images` faces with `edits` edits each go through at once: the generator renders
    the reconstructions and the edits together, the face parser sees the fused rows and each image."""
    return {"encoder": images, "generator": images + images * edits, "diffcam": images * edits,
            "suppressor": images * edits, "deghosting": images * edits, "face_parser": images * edits + images}


def poisson_rows(fused: np.ndarray, images: np.ndarray, labels: np.ndarray, source: np.ndarray,
                 side: int) -> np.ndarray:
    """seamlessClone(F_fused → I, M_face) per row.

    fused [N,3,S,S] and images [B,3,S,S] in [-1,1]; labels [N+B,P,P]: the face parser's labels of the
    fused rows, then of each image; source [N]: the image row each fused row was made from.
    """
    n = len(fused)
    fused_rgb, image_rgb = from_model_output(fused), from_model_output(images)
    out = np.empty_like(fused)
    for r in range(n):
        region = face_mask(labels[r], labels[n + source[r]], size=side)
        out[r] = to_model_input(poisson_blend(fused_rgb[r], image_rgb[source[r]], region), side)[0][0]
    return out


def fuse(image: np.ndarray, edit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """F_fused = T·M + I·(1−M): image, edit [N,3,S,S], mask [N,1,m,m] upsampled (nearest) to S."""
    factor = image.shape[-1] // mask.shape[-1]
    if factor > 1:
        mask = mask.repeat(factor, axis=2).repeat(factor, axis=3)
    return mix(image, edit, mask)


def area_downsample(images: np.ndarray, side: int) -> np.ndarray:
    """[B,C,H,H] → [B,C,side,side], the mean of each (H/side)² block (H a multiple of side)."""
    factor = images.shape[-1] // side
    if factor * side != images.shape[-1]:
        raise ValueError(f"image side {images.shape[-1]} is not a multiple of {side}")
    if factor == 1:
        return images
    b, c = images.shape[:2]
    return images.reshape(b, c, side, factor, side, factor).mean((3, 5), dtype=np.float32)


def _modes(suppress: str | Sequence[str]) -> list[str]:
    modes = [suppress] if isinstance(suppress, str) else list(dict.fromkeys(suppress))
    unknown = [m for m in modes if m not in SUPPRESS_MODES]
    if unknown or not modes:
        raise ValueError(f"unknown suppress mode(s) {unknown or modes}; choose from {', '.join(SUPPRESS_MODES)}")
    return modes


def _merge_rows(parts: list[tuple[np.ndarray, dict[str, np.ndarray]]], rows: int) -> dict[str, np.ndarray]:
    """(row indices, {name: [n,...]}) chunks → {name: [rows,...]} with each chunk's rows in place."""
    merged: dict[str, np.ndarray] = {}
    for indices, chunk in parts:
        for name, value in chunk.items():
            if name not in merged:
                merged[name] = np.empty((rows, *value.shape[1:]), value.dtype)
            merged[name][indices] = value
    return merged


def _take(value: np.ndarray | DeviceTensor, rows: np.ndarray) -> np.ndarray | DeviceTensor:
    return value.take(rows.tolist()) if isinstance(value, DeviceTensor) else value[rows]


def _host(value: np.ndarray | DeviceTensor) -> np.ndarray:
    return value.numpy() if isinstance(value, DeviceTensor) else value


class _Timer:
    """Wall-clock milliseconds accumulated per key: `with timer("encoder"): ...`."""

    def __init__(self):
        self.ms: dict[str, float] = {}

    def __call__(self, key: str):
        return timed(self.ms, key)
