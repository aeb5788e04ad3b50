"""The deterministic fill rule of shared/reference, written from its specification.

It turns a state_dict layout ([key, shape, dtype] entries) into tensors whose values depend only on
(seed, key, shape, rule), so a model that loads them strictly must reproduce the reference outputs
that the official implementations computed from the very same tensors.
"""

from __future__ import annotations

import fnmatch
import math
import re
import zlib
from collections import OrderedDict

import numpy as np
import torch

_NOISE_BUFFER = re.compile(r"(^|\.)(noises\.noise_\d+|injected_noise_\d+)$")
_GOLDEN = 0x9E3779B1


def _generator(seed: int, key: str) -> torch.Generator:
    # torch's CPU generator keeps only 32 bits of a seed, hence the 32-bit mix.
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return torch.Generator().manual_seed(zlib.crc32(key.encode()) ^ (seed * _GOLDEN % 2**32))


def _scheme_for(scheme, key: str) -> tuple[str, float]:
    """(kind, argument) for `key`: kaiming gain or equalized lr_mul."""
    if isinstance(scheme, str):
        name = scheme
    elif callable(scheme):
        name = scheme(key)
    else:
        name = next((s for pattern, s in dict(scheme).items() if fnmatch.fnmatchcase(key, pattern)), None)
        if name is None:
            raise ValueError(f"no scheme pattern matches key {key!r}")
    kind, _, arg = name.partition(":")
    if kind == "kaiming":
        return kind, float(arg) if arg else math.sqrt(2.0)
    if kind == "equalized":
        return kind, float(arg) if arg else 1.0
    raise ValueError(f"unknown scheme {name!r}")


def _fan_in(shape: tuple[int, ...]) -> int:
    # 5-D modulated weights are [1, out, in, k, k]: the fan-in skips the two leading axes.
    return int(np.prod(shape[2:] if len(shape) == 5 else shape[1:]))


def _value(key, shape, seed, scheme, constants, keys) -> torch.Tensor:
    if key in constants:
        value = torch.as_tensor(np.asarray(constants[key]))
        if tuple(value.shape) != shape:
            raise ValueError(f"constant {key!r} has shape {tuple(value.shape)}, layout says {shape}")
        return value.clone()
    if key.endswith("kernel"):
        raise KeyError(f"{key!r} is a fixed FIR buffer: pass its value in `constants`")
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    g = _generator(seed, key)

    def normal():
        return torch.randn(shape, generator=g, dtype=torch.float32)

    is_batchnorm = key.rsplit(".", 1)[0] + ".running_mean" in keys
    if key.endswith("running_mean"):
        return 0.1 * normal()
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g, dtype=torch.float32)
    if key.endswith(("noise.weight", "noise_injector.weight")):
        return 0.1 + 0.05 * normal()
    if _NOISE_BUFFER.search(key) or key.endswith("input.input"):
        return normal()
    if key.endswith("latent_avg"):
        return 0.1 * normal()
    if key.endswith("gamma"):
        return 0.5 + 0.1 * normal()
    if key.endswith("bias"):
        if "modulation.bias" in key:
            return 1.0 + 0.1 * normal()
        if is_batchnorm:
            return 0.1 * normal()
        kind, arg = _scheme_for(scheme, key)
        return 0.1 * normal() / (arg if kind == "equalized" else 1.0)
    if key.endswith("weight") and len(shape) == 1:
        return 1.0 + 0.1 * normal() if is_batchnorm else 0.25 + 0.05 * normal()
    if key.endswith(("weight", "weight_orig")) and len(shape) >= 2:
        kind, arg = _scheme_for(scheme, key)
        scale = arg / math.sqrt(_fan_in(shape)) if kind == "kaiming" else 1.0 / arg
        return normal() * scale
    raise ValueError(f"no fill rule for {key!r} {list(shape)}")


def fill_state_dict(entries, seed: int, scheme, constants=None) -> OrderedDict:
    """state_dict described by `entries` ([key, shape, dtype] in state_dict order)."""
    constants = dict(constants or {})
    keys = {entry[0] for entry in entries}
    unknown = set(constants) - keys
    if unknown:
        raise KeyError(f"constants not in the layout: {sorted(unknown)[:5]}")
    state = OrderedDict()
    for key, shape, dtype in entries:
        shape = tuple(int(s) for s in shape)
        state[key] = _value(key, shape, int(seed), scheme, constants, keys).to(getattr(torch, dtype))
    return state
