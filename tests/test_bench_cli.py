"""`deghost bench`: the README's benchmark command behind a subcommand, options passed through to pytest."""

from __future__ import annotations

import json

from deghost.apps.cli import build_parser, main


def test_bench_options_become_the_benchmark_suites_pytest_options(tmp_path):
    from deghost.apps.bench import BENCHMARKS, pytest_command

    args = build_parser().parse_args(["bench", "--preset", "ffhq1024", "--images", "2", "--rounds", "1",
                                      "--engines", str(tmp_path), "--", "-k", "end_to_end"])
    command = pytest_command(args)
    assert command[1:5] == ["-m", "pytest", str(BENCHMARKS), "--benchmark-only"]
    assert command[5:] == ["--preset", "ffhq1024", "--images", "2", "--rounds", "1", "--engines", str(tmp_path),
                           "-k", "end_to_end"]


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
