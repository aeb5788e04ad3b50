"""`deghost demo`: serve the web demo on this machine (Gradio, offline).

Exit codes: 0 served until stopped, 2 usage or configuration error (no Gradio, no engines, no editing
direction, bad option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deghost.runtime.backends import BackendError

from ..exits import EXIT_OK, usage_error
from ..options import add_aligned_option, add_backend_options, add_engines_option
from .session import BUNDLED_SAMPLES, DemoSession, find_samples

DESCRIPTION = """\
A web page to try the edits: upload a photo or pick a sample, choose the attribute and α, compare
the suppress modes side by side (original | fused | EOGI | ours | Poisson, as in the paper's
Figure 2), overlay the Diff-CAM and face masks, read the per-stage timings and download the result.
Runs on the exported engines (no PyTorch) and needs nothing from the internet. Needs the `demo`
extra: pip install 'deghost[demo]'."""

EPILOG = """\
examples:
  deghost demo --engines engines/                 then open http://127.0.0.1:7860
  deghost demo --engines engines/ --port 8080 --samples my_faces/
  deghost demo --engines engines/ --precision bf16   CPU: OpenVINO bf16 where each stage is within bound

Requests share one pipeline and run one at a time (a queue), so a second visitor waits rather
than loading the models again. Serve on 127.0.0.1 (the default) unless you mean to expose it."""


def add_demo_command(subparsers) -> argparse.ArgumentParser:
    """Register `demo` on an argparse subparsers object; the command runs `args.run(args)` → exit code."""
    parser = subparsers.add_parser(
        "demo", help="a web page to try edits and compare the suppress modes (Gradio, offline)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_engines_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, metavar="N", help="port (default: %(default)s)")
    parser.add_argument("--samples", type=Path, nargs="*", default=[], metavar="DIR",
                        help="folders of sample photos offered beside the upload, before the two bundled ones "
                        "(public-domain portraits: astronaut.png, grace_hopper.jpg)")
    add_backend_options(parser)
    add_aligned_option(parser, "uploads")
    parser.set_defaults(run=run_demo)
    return parser


def run_demo(args: argparse.Namespace) -> int:
    from deghost.runtime.pipeline import Pipeline

    from .app import GradioMissing, build_app, import_gradio, launch

    try:
        import_gradio()  # before the models load: the missing extra is the first thing to hear about
        pipe = Pipeline.load(args.engines, backend=args.backend, threads=args.threads, precision=args.precision,
                             device=args.device)
        session = DemoSession(pipe, find_samples([*args.samples, BUNDLED_SAMPLES]), aligned=args.aligned)
    except (GradioMissing, ValueError) as error:  # ManifestError and NoAttributesError are ValueErrors
        return _usage_error(str(error))
    try:
        session.prepare()
        for note in ([session.banner] if session.banner else []) + session.notes:
            print(f"deghost demo: NOTE: {note}", file=sys.stderr)
        launch(build_app(session), args.host, args.port)
    except (ValueError, BackendError, OSError) as error:  # OSError: the port is taken
        return _usage_error(str(error))
    finally:
        session.close()
    return EXIT_OK


def _usage_error(message: str) -> int:
    return usage_error("demo", message)
