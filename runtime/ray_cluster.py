"""Joining or starting a Ray cluster for `deghost edit --ray`, `deghost serve` and `deghost train synthesize --ray`
(Ray is optional).

Without an address a local Ray instance starts on the loopback address (Ray otherwise binds the
machine's network address) and stops when the command ends; with one (`auto`, `ray://host:10001`,
`host:6379`) the command joins that cluster and leaves it running. A process that already called
`ray.init` (a test session, a notebook) is reused as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

LOCAL_HOST = "127.0.0.1"
# Actor pools (deghost edit --ray, deghost train synthesize --ray): an actor process that dies is started
# again this many times, and the batch it was running is re-run this many times.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
INSTALL_HINT = "pip install 'deghost[ray]' (or: pip install 'ray[data,serve]')"


class RayMissingError(ImportError):
    """Ray is not installed; the message says how to install it."""


class RayJobError(RuntimeError):
    """The Ray job stopped (an actor could not start, retries ran out); the message has Ray's reason."""


def require_ray(feature: str = "--ray"):
    """The `ray` module, or RayMissingError naming the feature and the install command."""
    try:
        import ray
    except ImportError as error:
        raise RayMissingError(f"{feature} needs Ray, which is not installed: {INSTALL_HINT}") from error
    return ray


@contextmanager
def connected(address: str | None = None, num_cpus: int | None = None, feature: str = "--ray") -> Iterator[object]:
    """Ray connected for the block's duration → the `ray` module (see the module docstring)."""
    ray = require_ray(feature)
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, include_dashboard=False)
    else:
        ray.init(_node_ip_address=LOCAL_HOST, include_dashboard=False, num_cpus=num_cpus)
    try:
        yield ray
    finally:
        ray.shutdown()
