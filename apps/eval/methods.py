"""What `deghost eval --celeba-hq` runs and compares against, by name: torch-free, so the command line
can offer the choices without importing the metric networks."""

from __future__ import annotations

from deghost.runtime.directions import PAPER_ATTRIBUTES

METHOD_MODES = {"network": "network", "eogi": "eogi", "poisson": "poisson", "fused": "none"}  # name → suppress
REFERENCES = ("poisson", "original")
DEFAULT_FIRST = 1000
DEFAULT_ATTRIBUTES = PAPER_ATTRIBUTES
DEFAULT_METHODS = ("network", "eogi")
