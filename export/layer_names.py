"""Which ONNX node each layer of a TensorRT network was made for, from the names TensorRT's ONNX parser gives.

onnx-tensorrt (ImporterContext::registerLayer and generateUniqueName) names a node's first layer after
the node and every further one `<node>_<n>`, n from one counter shared by the whole parse (so not 1, 2,
…), and names the helper layers its utilities add `ONNXTRT_<what>` (ONNXTRT_Broadcast, ONNXTRT_ShapeSlice,
… with `_<n>` on repeats). Newer parsers also record the node's name as the layer's `metadata` where the
layer was registered with its node: where that names a node, it is taken first.

A helper is added while its node is imported, before the node's own layer (broadcastTensor runs before
the elementwise layer it feeds), so it goes to the node of the next layer that names one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

HELPER_PREFIX = "ONNXTRT_"
_COUNTER = re.compile(r"^(.+)_(\d+)$")


def node_of_name(layer: str, nodes: set[str]) -> str | None:
    """The node `layer` is named after: the name itself, else with its `_<n>` counters taken off one by one
    (a node may itself be called `/conv/Conv_1`, so the longest node name wins)."""
    name = layer
    while True:
        if name in nodes:
            return name
        match = _COUNTER.match(name)
        if match is None:
            return None
        name = match.group(1)


def layer_nodes(layers: Sequence[str], nodes: set[str], metadata: Sequence[str | None] = ()) -> list[str | None]:
    """The node each layer (in network order) belongs to, or None (a layer of no node: inputs' checks)."""
    metadata = list(metadata) or [None] * len(layers)
    owners: list[str | None] = [
        meta if meta in nodes else None if name.startswith(HELPER_PREFIX) else node_of_name(name, nodes)
        for name, meta in zip(layers, metadata, strict=True)]
    following = None
    for index in range(len(layers) - 1, -1, -1):  # helpers: the node of the next named layer
        if owners[index] is None and layers[index].startswith(HELPER_PREFIX):
            owners[index] = following
        elif owners[index] is not None:
            following = owners[index]
    return owners
