"""The `deghost` command line. Each subcommand imports its heavy dependencies only when it runs."""

from __future__ import annotations

import argparse
import sys

from deghost import __version__
from deghost.presets import DEFAULT_PRESET, PRESETS

from .exits import EXIT_FAILED, EXIT_OK


def _zoo(args: argparse.Namespace) -> int:
    import torch

    from deghost.training.selfcheck import run_selfcheck

    torch.set_num_threads(args.threads)
    ok = run_selfcheck(args.preset, args.networks, args.repeats, not args.no_flops)
    return EXIT_OK if ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deghost",
        description="Face-attribute editing with StyleGAN2 and fast ghosting-artifact suppression.",
    )
    parser.add_argument("--version", action="version", version=f"deghost {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    zoo = commands.add_parser(
        "zoo",
        help="self-check of the model zoo: parameter counts, forward time, FLOPs",
        description="Build every network of a preset with random (untrained) weights, compare its parameter "
        "count with the paper's, and time one forward pass at batch 1. Exit code 1 if a count differs.",
    )
    zoo.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                     help="network sizes: ffhq1024 = the paper's; tiny = fast (default: %(default)s)")
    zoo.add_argument("--networks", nargs="+", metavar="NAME",
                     help="only these networks (encoder generator discriminator diffcam suppressor deghosting "
                     "face_parser vgg16)")
    zoo.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (default: %(default)s)")
    zoo.add_argument("--repeats", type=int, default=2, help="timed forward passes after one warm-up")
    zoo.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one extra forward pass)")
    zoo.set_defaults(run=_zoo)

    # Each registrar module is torch-free at import; its command imports torch only when it runs.
    from deghost.export.cli import add_build_command, add_export_command
    from deghost.runtime.cuda_stack import add_gpu_command
    from deghost.training.cli import add_train_command

    from .bench import add_bench_command
    from .demo.cli import add_demo_command
    from .edit.cli import add_edit_command
    from .eval.cli import add_eval_command
    from .options import add_backend_options
    from .serve.cli import add_serve_command

    add_export_command(commands)
    add_build_command(commands)
    add_edit_command(commands)
    add_train_command(commands, add_backend_options)
    add_eval_command(commands)
    add_bench_command(commands)
    add_demo_command(commands)
    add_serve_command(commands)
    add_gpu_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
