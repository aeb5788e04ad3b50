"""The engine manifest (`engines/manifest.json`): what was built, from what, for which machine.

Torch-free: export writes it, the runtime trusts it. One `Artifact` per file (an ONNX graph or a
TensorRT plan) records its stage, precision, I/O, hashes and build environment (docs/design.md §4).
The manifest is written atomically (temp file + rename) so a crashed build never leaves half a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deghost import __version__
from deghost.files import atomic_write_bytes, sha256_of

MANIFEST_NAME = "manifest.json"
DIRECTIONS_FOLDER = "directions"  # the editing directions, beside the manifest
FORMAT_VERSION = 1


def build_command(folder: str | Path | None = None, stages: Sequence[str] = (), precision: str | None = None) -> str:
    """The command that (re)builds artifacts: `deghost build`, which every install has (a checkout's
    `python export/build_engines.py` takes the same options). The weights' option is left to the reader."""
    parts = ["deghost build --checkpoints DIR"]
    if stages:
        parts.append("--stages " + " ".join(stages))
    if precision:
        parts.append(f"--precision {precision}")
    if folder is not None:
        parts.append(f"--out {folder}")
    return " ".join(parts)


class ManifestError(ValueError):
    """A manifest or artifact that cannot be trusted: missing, corrupt, or built for something else."""


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class TensorInfo:
    name: str
    shape: list  # with "B" for the batch axis
    dtype: str
    profile: list | None = None  # TensorRT engines: [min, opt, max] concrete shapes


@dataclass
class Artifact:
    stage: str
    kind: str  # "onnx" or "tensorrt"
    precision: str  # "fp32" or "fp16"
    file: str  # relative to the manifest's folder
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    source: str  # "sha256:<checkpoint hash>" or "untrained: seed N"
    preset: str
    deghost_version: str = __version__
    built: str = field(default_factory=utc_now)
    onnx_sha256: str | None = None  # engines: the ONNX graph they were built from
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    validation: dict = field(default_factory=dict)  # e.g. {"max_abs_error": ..., "bound": ...}
    extra: dict = field(default_factory=dict)

    @property
    def untrained(self) -> bool:
        return self.source.startswith("untrained")

    @classmethod
    def from_dict(cls, data: dict) -> Artifact:
        data = dict(data)
        for key in ("inputs", "outputs"):
            data[key] = [TensorInfo(**item) for item in data[key]]
        return cls(**data)


def untrained_label(seed: int) -> str:
    """The provenance of seeded random weights (an artifact's or a direction's `source`)."""
    return f"untrained: seed {seed}"


@dataclass
class Manifest:
    folder: Path
    artifacts: list[Artifact] = field(default_factory=list)
    # attribute → {"file", "sha256", "source", "class_index"}: its Diff-CAM class, the mask it is blended with
    directions: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"no {MANIFEST_NAME} in {folder}; build the engines first: {build_command(folder)}"
            )
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT_VERSION:
                raise ManifestError(f"{path} has format {data.get('format')}, this deghost reads {FORMAT_VERSION}")
            artifacts = [Artifact.from_dict(item) for item in data["artifacts"]]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ManifestError(f"{path} is corrupt ({error}); rebuild: {build_command(folder)}") from error
        return cls(folder, artifacts, data.get("directions", {}))

    def save(self) -> Path:
        data = {
            "format": FORMAT_VERSION,
            "deghost_version": __version__,
            "written": utc_now(),
            "artifacts": [asdict(a) for a in self.artifacts],
            "directions": self.directions,
        }
        return atomic_write_bytes(self.path, (json.dumps(data, indent=2) + "\n").encode())

    def find(self, stage: str, kind: str, precision: str | None = None) -> Artifact | None:
        for artifact in self.artifacts:
            if artifact.stage == stage and artifact.kind == kind and precision in (None, artifact.precision):
                return artifact
        return None

    def put(self, artifact: Artifact) -> None:
        """Add `artifact`, replacing the one for the same stage, kind and precision."""
        self.artifacts = [
            a for a in self.artifacts
            if (a.stage, a.kind, a.precision) != (artifact.stage, artifact.kind, artifact.precision)
        ]
        self.artifacts.append(artifact)

    def file_of(self, artifact: Artifact) -> Path:
        return self.folder / artifact.file

    def verify(self, artifact: Artifact) -> Path:
        """The artifact's path, after checking that it exists and its sha256 is the recorded one."""
        path = self.file_of(artifact)
        if not path.is_file():
            raise ManifestError(f"{path} is listed in {self.path} but missing; rebuild the {artifact.stage} stage: "
                                f"{build_command(self.folder, [artifact.stage])}")
        if sha256_of(path) != artifact.sha256:
            raise ManifestError(
                f"{path} does not match its sha256 in {self.path} (modified or corrupt); rebuild the "
                f"{artifact.stage} stage: {build_command(self.folder, [artifact.stage])}"
            )
        return path
