"""StyleGAN2 generator key names: mmgen (`StyleGANv2Generator`, inside EOGI's `deghosting.pt`) ⇄ rosinality.

Only the names differ; shapes and values carry over unchanged, because both implementations store
the same quantities (read from mmgen's `styleganv2_modules.py`, `pggan/modules.py` and
`generator_discriminator_v2.py`):
- mmgen's EqualizedLR keeps the raw weight as `weight_orig` and scales it at run time by
  gain·lr_mul/√fan_in with gain 1 in every generator layer, as rosinality's `scale`; the modulated
  weights are [1,out,in,k,k] in both; fan_in skips the leading axis in both.
- the mapping MLP stores weight/lr_mul and the bias unscaled, multiplying both by lr_mul (0.01) at
  run time, as rosinality's `EqualLinear(lr_mul=0.01)`; style modulations start with bias 1 in both.
- FIR kernels are the same buffers ([1,3,3,1] outer product, ×4 where they follow an upsampling).
One behavioural difference that no renaming can carry: mmgen's PixelNorm is x / (‖x‖/√D + 1e-6),
rosinality's x·rsqrt(mean(x²) + 1e-8); w from the mapping differs by ~1e-6 relative. EOGI's forward
never calls the mapping network.
"""

from __future__ import annotations

import re

from torch import Tensor

# Layers that carry a modulated conv: the 4×4 conv and ToRGB, the StyledConvs and ToRGBs above.
_LAYER = r"(?:conv1|to_rgb1|convs\.\d+|to_rgbs\.\d+)"

# (mmgen, rosinality) name templates; {i} is a layer number, {m} a layer path (_LAYER). Every key of
# either generator matches exactly one template, so an unknown key is an error, not a silent pass.
_TEMPLATES = (
    ("style_mapping.{i}.linear.weight_orig", "style.{i}.weight"),
    ("style_mapping.{i}.bias", "style.{i}.bias"),
    ("constant_input.input", "input.input"),
    ("injected_noise_{i}", "noises.noise_{i}"),
    ("{m}.conv.weight_orig", "{m}.conv.weight"),
    ("{m}.conv.style_modulation.linear.weight_orig", "{m}.conv.modulation.weight"),
    ("{m}.conv.style_modulation.bias", "{m}.conv.modulation.bias"),
    ("{m}.conv.blur.kernel", "{m}.conv.blur.kernel"),
    ("{m}.noise_injector.weight", "{m}.noise.weight"),
    ("{m}.activate.bias", "{m}.activate.bias"),
    ("{m}.upsample.kernel", "{m}.upsample.kernel"),
    ("{m}.bias", "{m}.bias"),
)


def _pattern(template: str) -> re.Pattern:
    escaped = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{m\}", f"(?P<m>{_LAYER})")
    return re.compile(escaped)


_MMGEN_TO_ROSINALITY = [(_pattern(mmgen), rosinality) for mmgen, rosinality in _TEMPLATES]
_ROSINALITY_TO_MMGEN = [(_pattern(rosinality), mmgen) for mmgen, rosinality in _TEMPLATES]


def _rename(key: str, rules: list[tuple[re.Pattern, str]], source: str) -> str:
    for pattern, target in rules:
        match = pattern.fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    raise KeyError(f"{key!r} is not a {source} StyleGAN2 generator key")


def _convert(state_dict: dict[str, Tensor], prefix: str, rules, source: str) -> dict[str, Tensor]:
    converted = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            key = prefix + _rename(key[len(prefix) :], rules, source)
        converted[key] = value
    return converted


def mmgen_to_rosinality(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """mmgen StyleGANv2Generator state_dict → rosinality names (pure: tensors are shared, not copied).

    Keys starting with `prefix` are generator keys and are renamed (the prefix is kept); other keys
    pass through unchanged. With prefix "" every key must be a generator key.
    E.g. `style_mapping.1.linear.weight_orig` → `style.1.weight`, `injected_noise_3` →
    `noises.noise_3`, `convs.0.conv.style_modulation.bias` → `convs.0.conv.modulation.bias`.
    Raises KeyError on a key under the prefix that is not an mmgen generator key.
    """
    return _convert(state_dict, prefix, _MMGEN_TO_ROSINALITY, "mmgen")


def rosinality_to_mmgen(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """The inverse of `mmgen_to_rosinality` (rosinality generator names → mmgen names)."""
    return _convert(state_dict, prefix, _ROSINALITY_TO_MMGEN, "rosinality")
