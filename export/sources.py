"""Where each stage graph's weights come from: seeded random init or the official checkpoints.

`random_sources` and `checkpoint_sources` give, per stage, its provenance (`source`, recorded in
the manifest) and a loader that builds the stage graph only when it is needed, so an unchanged
stage is skipped without reading its (gigabyte-sized) checkpoint. Provenance is "untrained: seed N"
or "sha256:<checkpoint file hash>". `write_directions` puts the editing directions beside the graphs.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deghost.attributes import ATTRIBUTES, EXTRA_ATTRIBUTES, KNOWN_ATTRIBUTES, find_attribute
from deghost.files import atomic_write_bytes, npy_bytes, sha256_of
from deghost.manifest import DIRECTIONS_FOLDER, untrained_label
from deghost.presets import Preset
from deghost.stages import CHECKPOINT_FILES, STAGE_NAMES

if TYPE_CHECKING:  # torch is imported when a graph is built, so the build's --help stays fast
    from torch import nn

DIRECTION_SHAPE = (18, 512)  # W+ of the 1024 generator; smaller generators use the first rows


class SourceError(FileNotFoundError):
    """Checkpoints or directions that are missing or cannot be found."""


@dataclass(frozen=True)
class GraphSource:
    stage: str
    source: str  # "untrained: seed N" or "sha256:<checkpoint hash>"
    load: Callable[[], nn.Module]  # builds the stage graph (eval mode) when called


def _random_graph(stage: str, preset: Preset, seed: int) -> nn.Module:
    import torch

    from deghost.training.models import zoo

    from . import graphs

    network = zoo.build(stage, preset, seed)
    if stage == "encoder":
        latent_avg = 0.1 * torch.randn(preset.n_latent, preset.style_dim, generator=torch.Generator().manual_seed(seed))
        return graphs.EncoderGraph(network, latent_avg, preset).eval()
    return wrap(stage, network, preset)


def wrap(stage: str, network: nn.Module, preset: Preset) -> nn.Module:
    """The stage graph around `network` (not the encoder, which also needs its latent_avg)."""
    from . import graphs

    wrappers = {
        "generator": lambda: graphs.GeneratorGraph(network, preset),
        "diffcam": lambda: graphs.DiffCamGraph(network),
        "suppressor": lambda: graphs.SuppressorGraph(network),
        "deghosting": lambda: graphs.DeghostingGraph(network),
        "face_parser": lambda: graphs.FaceParserGraph(network),
    }
    return wrappers[stage]().eval()


def random_sources(preset: Preset, seed: int, stages=STAGE_NAMES) -> dict[str, GraphSource]:
    """Seeded random weights (`zoo.build(stage, preset, seed)`), labelled untrained."""
    return {
        stage: GraphSource(stage, untrained_label(seed), functools.partial(_random_graph, stage, preset, seed))
        for stage in stages
    }


def missing_checkpoints_message(folder: Path, missing: list[str]) -> str:
    expected = "\n".join(f"  {stage:12} {name}" for stage, name in CHECKPOINT_FILES.items())
    directions = ", ".join(" or ".join(a.direction_files) for a in ATTRIBUTES.values())
    return (
        f"checkpoints folder {folder} lacks {', '.join(sorted(set(missing)))}.\n"
        f"Expected file names, per stage:\n{expected}\n"
        f"  directions   {directions} (with the generator)\n"
        "Download the official files into that folder (the suppressor may also come from --suppressor FILE), "
        "or build untrained graphs with --random-init SEED."
    )


def checkpoint_sources(
    folder: str | Path, preset: Preset, stages=STAGE_NAMES, suppressor: str | Path | None = None
) -> dict[str, GraphSource]:
    """Official weights from `folder` by their usual names; missing files are listed in one error."""
    from deghost.training import checkpoints

    from . import graphs

    folder = Path(folder)
    paths = {stage: folder / CHECKPOINT_FILES[stage] for stage in stages}
    if suppressor is not None:
        paths.pop("suppressor", None)
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise SourceError(missing_checkpoints_message(folder, missing))

    load_psp = functools.cache(lambda: checkpoints.load_psp(paths.get("encoder", paths.get("generator")), preset.name))
    loaders = {
        "encoder": lambda: graphs.EncoderGraph(load_psp().encoder, load_psp().latent_avg, preset).eval(),
        "generator": lambda: wrap("generator", load_psp().generator, preset),
        "diffcam": lambda: wrap("diffcam", checkpoints.load_diffcam(paths["diffcam"], preset.n_classes), preset),
        "suppressor": lambda: suppressor_source(paths["suppressor"], preset).load(),
        "deghosting": lambda: wrap("deghosting", checkpoints.load_deghosting(paths["deghosting"], preset.name), preset),
        "face_parser": lambda: wrap("face_parser", checkpoints.load_bisenet(paths["face_parser"]), preset),
    }
    hashes = functools.cache(sha256_of)
    found = {stage: GraphSource(stage, f"sha256:{hashes(path)}", loaders[stage]) for stage, path in paths.items()}
    if suppressor is not None and "suppressor" in stages:
        found["suppressor"] = suppressor_source(suppressor, preset)
    return found


def suppressor_source(path: str | Path, preset: Preset) -> GraphSource:
    """A MAResU-Net checkpoint given by its path (--suppressor FILE), e.g. one deghost's training wrote."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"suppressor checkpoint {path} does not exist; pass the .pt file that training wrote")

    def load() -> nn.Module:
        from deghost.training import checkpoints

        return wrap("suppressor", checkpoints.load_maresunet(path), preset)

    return GraphSource("suppressor", f"sha256:{sha256_of(path)}", load)


def write_directions(out: Path, checkpoints: str | Path | None = None, seed: int | None = None,
                     extra: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Put one `<attr>.npy` per attribute into `out/directions/`; returns the manifest's `directions`.

    From `checkpoints` the official files are copied (the paper's four, required, and the EOGI release's
    other ones where present); with `seed` they are seeded random (18,512) float64 arrays, labelled
    untrained. `extra` is a folder of more direction files (e.g. `deghost train direction`'s), added or
    replacing by name. Returns {attr: {"file", "sha256", "source", "class_index"}}.
    """
    folder = out / DIRECTIONS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    if checkpoints is not None:
        sources = {name: _direction_file(Path(checkpoints), attribute) for name, attribute in ATTRIBUTES.items()}
        missing = [ATTRIBUTES[name].direction_files[0] for name, path in sources.items() if path is None]
        if missing:
            raise SourceError(missing_checkpoints_message(Path(checkpoints), missing))
        for name, attribute in EXTRA_ATTRIBUTES.items():
            sources[name] = _direction_file(Path(checkpoints), attribute)
    records = {}
    for index, name in enumerate(ATTRIBUTES):
        target = folder / f"{name}.npy"
        if checkpoints is None:
            # One stream per attribute, so adding an attribute leaves the others' directions unchanged.
            direction = np.random.default_rng([seed, index]).standard_normal(DIRECTION_SHAPE)
            atomic_write_bytes(target, npy_bytes(direction))
            records[name] = _record(target, untrained_label(seed), ATTRIBUTES[name].class_index)
    if checkpoints is not None:
        for name, path in sources.items():
            if path is not None:
                records[name] = _copy_direction(path, folder / f"{name}.npy", KNOWN_ATTRIBUTES[name].class_index)
    if extra is not None:
        records.update(_extra_directions(Path(extra), folder, log))
    return records


def _extra_directions(source: Path, folder: Path, log: Callable[[str], None]) -> dict:
    """Every usable `.npy` of `source` (with its JSON, if any), named by the known attribute it spells or by its
    stem; a file that is not a direction is skipped with a line saying why."""
    from deghost.runtime.directions import DirectionError, direction_class, direction_info_path, load_direction

    if not source.is_dir():
        raise SourceError(f"--directions {source} is not a folder; give the folder that holds the <name>.npy files")
    records = {}
    for path in sorted(source.glob("*.npy")):
        try:
            load_direction(path)
            class_index = direction_class(path)
        except DirectionError as error:
            log(f"directions: skipped {path.name}: {error}")
            continue
        attribute = find_attribute(path.stem)
        name = attribute.name if attribute else path.stem
        info = direction_info_path(path)
        untrained = info.is_file() and json.loads(info.read_text()).get("untrained", False)
        record = _copy_direction(path, folder / f"{name}.npy", class_index, untrained)
        if info.is_file():
            _copy(info, direction_info_path(folder / f"{name}.npy"))
        if class_index is None:
            log(f"directions: {path.name} names no Diff-CAM class (no {info.name}, not a known attribute): its mask "
                "will follow the class whose logit the edit changes most")
        records[name] = record
    return records


def _copy_direction(path: Path, target: Path, class_index: int | None, untrained: bool = False) -> dict:
    _copy(path, target)
    source = f"sha256:{sha256_of(path)}"
    return _record(target, f"untrained: learned from untrained weights, {source}" if untrained else source,
                   class_index)


def _copy(path: Path, target: Path) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(path, temp)
    temp.replace(target)


def _record(target: Path, source: str, class_index: int | None) -> dict:
    record = {"file": f"{DIRECTIONS_FOLDER}/{target.name}", "sha256": sha256_of(target), "source": source}
    return record if class_index is None else {**record, "class_index": class_index}


def _direction_file(folder: Path, attribute) -> Path | None:
    """The attribute's direction in `folder` under deghost's name or EOGI's (`smile.npy` or `Smiling.npy`)."""
    return next((folder / name for name in attribute.direction_files if (folder / name).is_file()), None)


