"""Whether this CPU computes bf16 (OpenVINO's CPU capabilities): a test of bf16 numerics needs it, since a
CPU without bf16 instructions runs a bf16 request in f32 (deghost says so and runs f32)."""

from __future__ import annotations

import pytest


def bf16_missing() -> str | None:
    """Why bf16 cannot be computed here (OpenVINO absent, or no bf16 instructions), or None."""
    from deghost.runtime.backends.openvino import cpu_bf16_missing, unavailable_reason

    return unavailable_reason() or cpu_bf16_missing()


needs_cpu_bf16 = pytest.mark.skipif(bf16_missing() is not None, reason=f"needs bf16 on the CPU: {bf16_missing()}")
