"""`deghost build`: the engine build as a subcommand of the `deghost` command line."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from .build import run_from_args

    return run_from_args(args)


def add_build_command(subparsers) -> argparse.ArgumentParser:
    """Register `deghost build` (same options as `python export/build_engines.py`) on `subparsers`."""
    from .build import DESCRIPTION, EPILOG, add_build_arguments

    parser = subparsers.add_parser(
        "build",
        help="export every stage to ONNX (FP32, FP16) and build TensorRT engines",
        description=DESCRIPTION,
        epilog=EPILOG.replace("python export/build_engines.py", "deghost build"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_build_arguments(parser)
    parser.set_defaults(run=_run)
    return parser
