"""`deghost build` and `deghost export`: the engine build (or its ONNX half) as `deghost` subcommands."""

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
        help="export every stage to ONNX (FP32; FP16 where TensorRT is) and build TensorRT engines",
        description=DESCRIPTION,
        epilog=EPILOG.replace("python export/build_engines.py", "deghost build"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_build_arguments(parser)
    parser.set_defaults(run=_run)
    return parser


def add_export_command(subparsers) -> argparse.ArgumentParser:
    """Register `deghost export`: `deghost build` stopped after the validated ONNX graphs (no TensorRT options)."""
    from .build import add_build_arguments

    parser = subparsers.add_parser(
        "export",
        help="export every stage to validated ONNX graphs (FP32; FP16 if asked) only; no TensorRT needed",
        description="Export every pipeline stage to ONNX, validated against PyTorch with ONNX Runtime (with\n"
        "--precision fp16 also converted to FP16, validated against FP32), recorded in OUT/manifest.json:\n"
        "`deghost build --onnx-only`. The runtime runs these graphs with OpenVINO or ONNX Runtime;\n"
        "`deghost build` adds TensorRT engines on a machine that has TensorRT.",
        epilog="examples:\n  deghost export --random-init 0 --preset tiny --precision fp32 --out engines-tiny/\n"
        "  deghost export --checkpoints checkpoints/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_build_arguments(parser, engines=False)
    parser.set_defaults(run=_run)
    return parser
