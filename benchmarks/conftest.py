"""Options and the shared results report of `pytest benchmarks --benchmark-only`."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.machine import describe
from benchmarks.report import Report

RESULTS = Path(__file__).parent / "results"  # committed figures: written only when a run asks (--save-results)
SCRATCH = Path(__file__).resolve().parent.parent / ".benchmarks" / "deghost"  # untracked (.gitignore): other runs
WRITTEN = pytest.StashKey[tuple[Report, list[Path]]]()  # the run's report and its files, for the summary


def pytest_addoption(parser):
    group = parser.getgroup("deghost")
    group.addoption("--preset", default="tiny", choices=["tiny", "ffhq1024"],
                    help="network sizes for the timing benchmarks (default: tiny, minutes on a CPU)")
    group.addoption("--images", type=int, default=None,
                    help="images per round for the end-to-end comparison (default: 4 on a CPU, 1000 on a GPU)")
    group.addoption("--rounds", type=int, default=3, help="interleaved rounds of network vs EOGI (default: 3)")
    group.addoption("--engines", default=None,
                    help="an existing engine folder (with manifest.json) instead of building untrained ONNX graphs")
    group.addoption("--results-dir", default=None,
                    help="where results.json, results.md and results.png are written (default: .benchmarks/deghost/"
                    "<preset>/, untracked, so a run leaves the checkout clean; see --save-results)")
    group.addoption("--save-results", action="store_true",
                    help="write the results into the committed benchmarks/results/<preset>/ (the README's figures) "
                    "instead of the untracked .benchmarks/deghost/<preset>/")


def results_folder(config: pytest.Config, name: str) -> Path:
    """Where a run's results go: --results-dir if given, else benchmarks/results/<name>/ with --save-results,
    else .benchmarks/deghost/<name>/ (ignored by git: a run that did not ask leaves no tracked file changed)."""
    given = config.getoption("--results-dir")
    if given:
        return Path(given)
    return (RESULTS if config.getoption("--save-results") else SCRATCH) / name


@pytest.fixture(scope="session")
def torch_module():
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch


@pytest.fixture(scope="session")
def report(request, torch_module):
    collected = Report(describe(torch_module))
    yield collected
    if collected.sections:
        folder = results_folder(request.config, request.config.getoption("--preset"))
        request.config.stash[WRITTEN] = collected, collected.write(folder)


def pytest_terminal_summary(terminalreporter, config):
    """The results tables (parameters, end-to-end ratio, …) on the terminal, past pytest's output capture."""
    if WRITTEN not in config.stash:
        return
    collected, paths = config.stash[WRITTEN]
    terminalreporter.section("deghost benchmark results")
    terminalreporter.write_line(collected.markdown())
    for path in paths:
        terminalreporter.write_line(f"written: {path}")


@pytest.fixture(scope="session")
def engines(request, tmp_path_factory):
    """The preset's ONNX graphs (untrained, seed 0), built once, or an existing folder from --engines."""
    given = request.config.getoption("--engines")
    if given:
        return given
    from deghost.export.build import BuildOptions, build

    out = tmp_path_factory.mktemp(f"engines_{request.config.getoption('--preset')}")
    build(BuildOptions(out=out, preset=request.config.getoption("--preset"), random_init=0, onnx_only=True,
                       precision="fp32"), log=print)
    return out


@pytest.fixture(scope="session")
def pipeline(engines):
    from deghost.runtime.pipeline import Pipeline

    return Pipeline.load(engines, backend="auto")
