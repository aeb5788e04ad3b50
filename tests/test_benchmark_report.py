"""The benchmark report's bookkeeping (which run and machine a figure comes from) and the CPU peak's derivation."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks import machine
from benchmarks.report import Report

AMD = {"cpu": "AMD EPYC", "cores": 2}
INTEL = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}


def write_run(folder, machine_info: dict, sections: dict[str, list[dict]]) -> dict:
    report = Report(machine_info)
    for title, rows in sections.items():
        for row in rows:
            report.add(title, row)
    report.write(folder)
    return json.loads((folder / "results.json").read_text())


def test_a_later_run_keeps_unmeasured_sections_and_replaces_measured_ones(tmp_path):
    write_run(tmp_path, AMD, {"End to end (ratio 0.5)": [{"label": "a", "seconds": 2.0}],
                              "Parameters": [{"label": "p", "seconds": 1.0}]})
    second = write_run(tmp_path, AMD, {"End to end (ratio 0.6)": [{"label": "a", "seconds": 3.0}]})
    assert list(second["sections"]) == ["End to end (ratio 0.6)", "Parameters"]  # the family replaced, once
    assert second["sections"]["Parameters"] == [{"label": "p", "seconds": 1.0}]
    assert second["provenance"] == {}  # the same machine: the header's line covers every section


def test_a_note_of_the_later_run_replaces_the_earlier_note_on_the_same_subject(tmp_path):
    first = Report(AMD, notes=["End to end (tiny): ratio 0.53", "Memory: arena off"])
    first.add("End to end", {"label": "a", "seconds": 2.0})
    first.add("Memory", {"label": "m", "seconds": 1.0})
    first.write(tmp_path)
    second = Report(AMD, notes=["End to end (tiny): ratio 0.49"])
    second.add("End to end", {"label": "a", "seconds": 1.9})
    second.write(tmp_path)
    notes = json.loads((tmp_path / "results.json").read_text())["notes"]
    assert notes[:2] == ["End to end (tiny): ratio 0.49", "Memory: arena off"]  # the kept section's note stays
    assert notes[2].startswith("Sections kept from an earlier run on the same preset: Memory")


def test_a_section_kept_from_another_machine_names_that_machine_and_when(tmp_path):
    first = write_run(tmp_path, AMD, {"Parameters": [{"label": "p", "seconds": 1.0}]})
    write_run(tmp_path, INTEL, {"End to end": [{"label": "a", "seconds": 3.0}]})
    third = write_run(tmp_path, INTEL, {"Memory": [{"label": "m", "seconds": 4.0}]})
    origin = f"measured {first['measured']} on cpu AMD EPYC, cores 2"
    # Carried through a second later run too: the section still comes from the AMD machine.
    assert third["provenance"] == {"Parameters": origin}
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.startswith("# deghost benchmark results\n\nMachine: cpu Intel(R) Xeon(R) Processor, cores 2")
    assert f"## Parameters\n\nKept from an earlier run: {origin}.\n" in markdown
    assert "## End to end\n\n|" in markdown  # measured on this machine: no provenance line


@pytest.mark.parametrize("vendor, family, flags, fp32, bf16", [
    # 2 cores × 2.6 GHz × 2 (FMA) × lanes × 2 pipes; bf16 dot products double it; AMX: 1024 FLOP/cycle/core.
    ("AuthenticAMD", 25, {"avx512f", "avx2", "fma", "avx512_bf16"}, 2 * 2.6 * 2 * 8 * 2, 2 * 2 * 2.6 * 2 * 8 * 2),
    ("AuthenticAMD", 26, {"avx512f", "avx2", "fma", "avx512_bf16"}, 2 * 2.6 * 2 * 16 * 2, 2 * 2 * 2.6 * 2 * 16 * 2),
    ("GenuineIntel", 6, {"avx512f", "avx2", "fma", "avx512_bf16", "amx_bf16"}, 2 * 2.6 * 2 * 16 * 2, 2 * 2.6 * 1024),
    ("GenuineIntel", 6, {"avx2", "fma"}, 2 * 2.6 * 2 * 8 * 2, None),
])
def test_the_theoretical_peak_follows_the_vector_width_and_the_bf16_units(monkeypatch, vendor, family, flags, fp32,
                                                                          bf16):
    monkeypatch.setattr(machine, "cpu_flags", lambda: (vendor, flags, family, 2600.0))
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    peak = machine.theoretical_peak_gflops()
    assert peak["fp32"] == pytest.approx(fp32)
    assert peak["bf16"] == (None if bf16 is None else pytest.approx(bf16))


def test_a_measured_clock_replaces_the_nominal_one_in_the_theoretical_peak(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: ("AuthenticAMD", {"avx512f", "avx2", "fma", "avx512_bf16"}, 25,
                                                       2600.0))
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    peak = machine.theoretical_peak_gflops(clock_ghz=3.7)
    assert peak["fp32"] == pytest.approx(2 * 3.7 * 2 * 8 * 2)  # Zen 4: 8 FP32 lanes per FMA pipe
    assert "3.70 GHz measured" in peak["derivation"]


def test_the_clock_is_measured_by_a_chain_of_adds_that_really_runs():
    chain = machine.add_chain()
    if chain is None:
        pytest.skip("no executable memory or not x86-64: the peak falls back to the nominal clock")
    function, _page = chain
    assert function(1000) == 16 * 1000  # 16 adds of 1 per iteration
    # One add per cycle, timed by this thread's CPU time: on a shared host the wall clock also counts the
    # time other processes hold the core (at a load of 11 on 2 cores the wall-clock rate read 0.4 GHz).
    iterations = 20_000_000
    start = time.thread_time()
    function(iterations)
    clock = 16 * iterations / (time.thread_time() - start) / 1e9
    nominal_ghz = machine.cpu_flags()[3] / 1e3
    # Any x86-64 core runs between ~1 and ~6 GHz; within a factor of 2.5 of the nominal clock /proc/cpuinfo names.
    assert 0.8 < clock < 7.0
    if nominal_ghz:
        assert nominal_ghz / 2.5 < clock < nominal_ghz * 2.5
    # The benchmark's all-cores figure runs on the wall clock: only its upper bound holds on a busy host.
    assert 0 < machine.measured_clock_ghz(iterations=2_000_000, rounds=2) < 7.0


def test_the_least_time_divides_each_stage_by_the_peak_of_the_precision_it_runs_in():
    from benchmarks.cpu_backends import least_seconds

    gflop = {"encoder": 100.0, "generator": 300.0, "diffcam": 30.0, "suppressor": 200.0, "deghosting": 1000.0}
    peaks = {"theoretical fp32": 200.0, "theoretical bf16": 400.0}
    precisions = {"encoder": "bf16", "generator": "bf16", "diffcam": "fp32", "suppressor": "bf16"}
    # 100/400 + 300/400 + 30/200 + 200/400; EOGI's deghosting is not part of the network pipeline.
    assert least_seconds(gflop, peaks, precisions) == pytest.approx(1.65)
    no_bf16 = {"theoretical fp32": 200.0, "theoretical bf16": None}
    assert least_seconds(gflop, no_bf16, precisions) == pytest.approx(630 / 200)
