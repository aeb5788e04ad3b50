"""The paper's size claim: MAResU-Net 26,285,115 vs EOGI Deghosting 174,196,615 parameters (6.6×)."""

from __future__ import annotations

from deghost.presets import get_preset
from deghost.training.models.zoo import BUILDERS, count_parameters

PAPER = {"suppressor": 26_285_115, "deghosting": 174_196_615}


def count_on_meta(torch_module, name: str, trainable_only: bool = False) -> int:
    with torch_module.device("meta"):  # shapes only: no memory, no initialisation
        return count_parameters(BUILDERS[name](get_preset("ffhq1024")), trainable_only)


def test_parameter_counts_of_ours_and_eogi(benchmark, torch_module, report):
    counts = benchmark(lambda: {name: count_on_meta(torch_module, name) for name in PAPER})
    trainable = count_on_meta(torch_module, "deghosting", trainable_only=True)
    assert counts == PAPER
    assert trainable == 143_826_555
    ratio = counts["deghosting"] / counts["suppressor"]
    benchmark.extra_info.update(counts=counts, eogi_trainable=trainable, ratio=round(ratio, 3))
    report.add("Parameters (paper configuration, counted from the models)", {
        "network": "MAResU-Net (ours)", "parameters": counts["suppressor"], "trainable": counts["suppressor"],
        "vs EOGI": "1.00x"})
    report.add("Parameters (paper configuration, counted from the models)", {
        "network": "EOGI Deghosting", "parameters": counts["deghosting"], "trainable": trainable,
        "vs EOGI": f"{ratio:.2f}x larger"})
    print(f"\nparameters: MAResU-Net {counts['suppressor']:,} vs EOGI {counts['deghosting']:,} ({ratio:.2f}x)")
