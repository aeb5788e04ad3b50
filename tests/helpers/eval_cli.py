"""Running `deghost eval` in-process and reading the CSV tables it writes."""

from __future__ import annotations

import argparse
import csv

from deghost.apps.eval.cli import add_eval_command


def run_eval(*argv) -> int:
    """`deghost eval --no-progress --device cpu ARGV…` → its exit code."""
    parser = argparse.ArgumentParser(prog="deghost")
    add_eval_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", "--no-progress", "--device", "cpu", *map(str, argv)])
    return args.run(args)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
