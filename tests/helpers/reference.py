"""Access to the official models' reference layouts and outputs in tests/data/reference/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fill_rule import fill_state_dict

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "reference"


@dataclass
class Reference:
    name: str
    manifest: dict
    io: dict  # numpy arrays by name; empty where the model has no stored outputs

    @property
    def entries(self) -> list:
        return self.manifest["entries"]

    @property
    def constants(self) -> dict:
        return {key[len("const."):]: value for key, value in self.io.items() if key.startswith("const.")} or {
            key: np.asarray(value) for key, value in self.manifest.get("constants", {}).items()
        }

    def state_dict(self, seed: int | None = None):
        """The filled state_dict; `seed` defaults to the one the outputs were computed with."""
        if seed is None:
            seed = int(self.io["seed"])
        return fill_state_dict(self.entries, seed, self.manifest["scheme"], self.constants)

    def layout(self) -> dict:
        """{key: (shape, dtype)} of the official state_dict."""
        return {key: (tuple(shape), dtype) for key, shape, dtype in self.entries}


def load_reference(name: str) -> Reference:
    manifest = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
    io_path = REFERENCE_DIR / f"{name}_io.npz"
    io = dict(np.load(io_path)) if io_path.exists() else {}
    return Reference(name, manifest, io)
