"""The tiny preset's pSp encoder file layout, derived from the official one (tests/data/reference/psp_encoder):
the same keys and dtypes, the first 14 style blocks (a 256² generator's W+ layers), every channel dimension
divided by 4 (trunk width 16 instead of 64) except the 512-d codes the style blocks' linear layers give."""

from __future__ import annotations

TINY_STYLES = 14  # 2·log2(256) − 2
TINY_NARROWING = 4  # the tiny preset's encoder width 16 against pSp's 64


def narrowed(key: str, shape: tuple, factor: int = TINY_NARROWING) -> tuple:
    if ".linear." in key:  # EqualLinear(512/f → 512): the code stays 512-d
        return (shape[0], shape[1] // factor) if len(shape) == 2 else shape
    if key == "input_layer.0.weight":  # RGB in
        return (shape[0] // factor, *shape[1:])
    return tuple(d // factor for d in shape[:2]) + tuple(shape[2:])  # [out, in, k, k], [channels], []


def tiny_layout(official: dict[str, tuple]) -> dict[str, tuple]:
    """{key: (shape, dtype)} of the tiny encoder from the official encoder's {key: (shape, dtype)}."""
    extra = tuple(f"styles.{i}." for i in range(TINY_STYLES, 18))
    return {key: (narrowed(key, shape), dtype) for key, (shape, dtype) in official.items() if not key.startswith(extra)}
