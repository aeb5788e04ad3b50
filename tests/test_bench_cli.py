"""`deghost bench`: the README's benchmark command behind a subcommand, options passed through to pytest."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from deghost.apps.cli import build_parser, main


def test_bench_options_become_the_benchmark_suites_pytest_options(tmp_path):
    from deghost.apps.bench import BENCHMARKS, pytest_command

    args = build_parser().parse_args(["bench", "--preset", "ffhq1024", "--images", "2", "--rounds", "1",
                                      "--engines", str(tmp_path), "--save-results", "--", "-k", "end_to_end"])
    command = pytest_command(args)
    assert command[1:5] == ["-m", "pytest", str(BENCHMARKS), "--benchmark-only"]
    assert command[5:] == ["--preset", "ffhq1024", "--images", "2", "--rounds", "1", "--engines", str(tmp_path),
                           "--save-results", "-k", "end_to_end"]


def test_bench_runs_the_parameter_benchmark_prints_and_writes_its_results(tmp_path, capfd):
    argv = ["bench", "--results-dir", str(tmp_path), "--", "-k", "parameters", "-q", "-p", "no:cacheprovider"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = [row for rows in results["sections"].values() for row in rows]
    assert {row["parameters"] for row in rows} >= {26_285_115, 174_196_615}
    printed = capfd.readouterr().out
    assert "passed" in printed and "| EOGI Deghosting | 174,196,615 |" in printed  # the table reaches the terminal


def test_bench_refuses_a_round_count_below_one(capsys):
    assert main(["bench", "--rounds", "0"]) == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err


def git_status(folder) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=folder, check=True,
                          capture_output=True, text=True).stdout


def test_a_benchmark_run_that_does_not_ask_to_save_leaves_the_checkout_clean():
    """Without --results-dir or --save-results the results go to the untracked .benchmarks/deghost/<preset>/:
    `git status` reads the same before and after, and the committed benchmarks/results/ files are untouched."""
    from deghost.apps.bench import BENCHMARKS, SOURCE_ROOT

    if shutil.which("git") is None or not (SOURCE_ROOT / ".git").exists():
        pytest.skip("needs a git checkout of deghost (the benchmarks live in the source checkout)")
    committed = {p: p.read_bytes() for p in (BENCHMARKS / "results").rglob("*") if p.is_file()}
    before, started = git_status(SOURCE_ROOT), time.time()
    assert main(["bench", "--", "-k", "parameters", "-q", "-p", "no:cacheprovider"]) == 0
    assert git_status(SOURCE_ROOT) == before
    assert {p: p.read_bytes() for p in committed} == committed
    written = SOURCE_ROOT / ".benchmarks" / "deghost" / "tiny" / "results.json"
    assert written.stat().st_mtime >= started - 1
    assert "174,196,615" in written.with_name("results.md").read_text()
