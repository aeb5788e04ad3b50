"""`deghost serve`: run the editing service on Ray Serve until Ctrl-C (apps/serve/app.py)."""

from __future__ import annotations

import argparse

from deghost.runtime.backends import BackendError
from deghost.runtime.ray_cluster import LOCAL_HOST

from ..exits import EXIT_OK, usage_error
from ..options import add_aligned_option, add_backend_options, add_engines_option
from .app import DEFAULT_MAX_BATCH, DEFAULT_PORT, DEFAULT_QUEUE

EPILOG = """\
endpoints:
  POST /edit?attribute=smile&alpha=20&suppress=network   body: an image file → the edited PNG
  GET  /health     GET /manifest

examples:
  deghost serve --engines engines/                        one replica on a local Ray instance, 127.0.0.1:8000
  curl --data-binary @face.png 'http://127.0.0.1:8000/edit?attribute=age&alpha=-10' -o older.png
  deghost serve --engines engines/ --address auto --replicas 4 --gpus-per-replica 1 --host 0.0.0.0
  deghost serve --engines engines/ --precision bf16      CPU: OpenVINO bf16 where each stage is within bound

errors: 400 bad image or parameter, 413 upload too large, 422 no face / unusable image,
  503 busy (Retry-After says when to retry; from a replica past --queue edits, or from Ray's proxy
  when a burst outruns the replicas), 503 without Retry-After: the deployment is down (see Ray's log)
"""


def add_serve_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help="serve the editing pipeline over HTTP on Ray Serve (pip install 'deghost[ray]')",
        description="Serve the engines as an HTTP service on Ray Serve: one Pipeline per replica, concurrent "
        "requests batched, a bounded queue per replica.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_engines_option(parser)
    parser.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas, one Pipeline each (default: 1)")
    parser.add_argument("--host", default=LOCAL_HOST, help="address to listen on (default: %(default)s, this machine "
                        "only; 0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (default: %(default)s)")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="Ray cluster to join (auto, host:6379); default: start a local Ray instance")
    add_backend_options(parser, threads_scope=" per replica")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="C", help="default: %(default)s")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G",
                        help="1 on a GPU cluster: a replica per GPU (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                        help="requests gathered into one pipeline batch (default: %(default)s)")
    parser.add_argument("--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                        help="edits one replica admits at once; more get 503 + Retry-After (default: %(default)s)")
    add_aligned_option(parser, "uploads")
    parser.set_defaults(run=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from deghost.runtime.ray_cluster import RayMissingError, connected

    if min(args.replicas, args.max_batch, args.queue) < 1 or (args.threads is not None and args.threads < 1):
        return _usage_error("--replicas, --max-batch, --queue and --threads must be at least 1")
    try:
        with connected(args.address, feature="deghost serve"):
            from ray import serve

            from .app import start_service, wait_until_interrupted

            try:
                url = start_service(args.engines, args.replicas, args.host, args.port, args.backend, args.threads,
                                    args.max_batch, args.queue, args.aligned, args.cpus_per_replica,
                                    args.gpus_per_replica, precision=args.precision, device=args.device)
                print(f"deghost serve: listening on {url} (POST /edit, GET /health, GET /manifest); Ctrl-C stops")
                wait_until_interrupted()
            finally:
                serve.shutdown()
    except (ValueError, BackendError, RayMissingError) as error:
        return _usage_error(str(error))
    return EXIT_OK


def _usage_error(message: str) -> int:
    return usage_error("serve", message)
