"""The options that `deghost edit`, `serve`, `demo`, `eval` and `train synthesize` share, declared once: where
the engines are, which backend, device, precision and threads run them, and whether inputs are already
aligned crops."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deghost.runtime.backends import BACKENDS, DEVICES, PRECISIONS
from deghost.runtime.backends.compiled_cache import NO_CACHE_ENV

ENGINES_HELP = "folder with manifest.json, engines/graphs and directions/ (default: engines/)"


def add_engines_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engines", type=Path, default=Path("engines"), metavar="DIR", help=ENGINES_HELP)


def add_backend_options(parser: argparse.ArgumentParser, threads_scope: str = "") -> None:
    """--backend, --device, --precision, --threads (`threads_scope`, e.g. " per replica", ends its help)."""
    add_backend_option(parser)
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the networks run: cpu never uses the GPU (default: auto, the GPU where a GPU "
                        "backend loads)")
    add_precision_option(parser)
    parser.add_argument("--threads", type=int, metavar="N",
                        help=f"CPU threads per operator, ONNX Runtime or OpenVINO{threads_scope} (default: all cores)")
    parser.add_argument("--no-cache", nargs=0, action=_TurnCacheOff,
                        help=f"compile the OpenVINO stages in this run, not using the compiled-model cache (as "
                        f"{NO_CACHE_ENV}=1 does; default: the cache in $DEGHOST_CACHE_DIR or "
                        "~/.cache/deghost/compiled)")


class _TurnCacheOff(argparse.Action):
    """--no-cache sets the environment variable, so the processes this one starts (Ray actors, replicas) see it."""

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[NO_CACHE_ENV] = "1"
        setattr(namespace, self.dest, True)


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TensorRT where the engines load, else ONNX Runtime on CUDA, else the fastest "
                        "CPU backend installed: OpenVINO, else ONNX Runtime (default: auto)")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: fp16 TensorRT engines as built, else fp32; bf16: OpenVINO on the CPU, the "
                        "stages within their recorded bf16 bound (default: auto)")


def add_aligned_option(parser, inputs: str = "inputs") -> None:
    parser.add_argument("--aligned", action="store_true",
                        help=f"{inputs} are FFHQ-aligned face crops, edited as they are: no detection, alignment or "
                        "paste-back (default: ordinary photos, whose faces are found, aligned, edited and pasted back)")

