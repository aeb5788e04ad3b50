"""The attributes the demo offers: the manifest's directions (the paper's four first, in its order), then
each direction file in the engines folder's directions/ that the manifest does not list, labelled so.

The pipeline edits with a manifest name or with the path of a direction `.npy` (`Pipeline.edits`); the
page shows a label and sends a key (the name, or directions/<file>.npy), so no server path reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deghost.manifest import DIRECTIONS_FOLDER, Manifest, build_command
from deghost.runtime.directions import PAPER_ATTRIBUTES, DirectionError, load_direction
from deghost.runtime.pipeline import Pipeline

EXTRA_LABEL = "{name} (direction file, not in the manifest)"


class NoAttributesError(ValueError):
    """The engines folder has no direction to edit with; the message says how to build them."""


@dataclass(frozen=True)
class AttributeChoice:
    key: str  # what the page sends: the manifest's name, or directions/<file>.npy
    label: str  # what the page shows
    source: str  # what Pipeline.edits takes: the manifest's name, or the file's path


def attribute_choices(pipe: Pipeline) -> tuple[list[AttributeChoice], list[str]]:
    """(choices, notes): the manifest's attributes and the usable extra direction files, and a note for
    each file left out (one the pipeline could not use). NoAttributesError when there is none at all."""
    listed = pipe.attributes
    names = [name for name in PAPER_ATTRIBUTES if name in listed] + [n for n in listed if n not in PAPER_ATTRIBUTES]
    choices = [AttributeChoice(name, name, name) for name in names]
    notes = []
    for path in extra_direction_files(pipe.manifest):
        try:
            load_direction(path, pipe.preset.n_latent, pipe.preset.style_dim)
        except DirectionError as error:
            notes.append(f"{path.name} is not offered as an attribute: {error}")
            continue
        choices.append(AttributeChoice(f"{DIRECTIONS_FOLDER}/{path.name}", EXTRA_LABEL.format(name=path.stem),
                                       str(path)))
    if not choices:
        raise NoAttributesError(no_attributes_message(pipe.manifest))
    return choices, notes


def extra_direction_files(manifest: Manifest) -> list[Path]:
    """The `.npy` files of the engines folder's directions/ that the manifest does not list, by name."""
    folder = manifest.folder / DIRECTIONS_FOLDER
    if not folder.is_dir():
        return []
    listed = {(manifest.folder / entry["file"]).resolve() for entry in manifest.directions.values()}
    return sorted(path for path in folder.glob("*.npy")
                  if path.is_file() and not path.name.startswith(".") and path.resolve() not in listed)


def no_attributes_message(manifest: Manifest) -> str:
    return (f"{manifest.path} lists no editing direction and {manifest.folder / DIRECTIONS_FOLDER} holds no "
            f"direction .npy, so there is no attribute to edit; build the engines with their directions (they come "
            f"with the generator stage): {build_command(manifest.folder, ['generator'])}")
