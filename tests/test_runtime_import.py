"""The runtime is torch-free: every module imports with torch, training and export made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    FORBIDDEN = ("torch", "torchvision", "deghost.training", "deghost.export", "tensorrt", "cuda")

    class Forbid:
        def find_spec(self, name, path=None, target=None):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                raise ImportError(f"the runtime imported {name}")

    sys.meta_path.insert(0, Forbid())
    import deghost.runtime

    modules = [m.name for m in pkgutil.walk_packages(deghost.runtime.__path__, "deghost.runtime.")]
    for name in modules:
        importlib.import_module(name)
    print(" ".join(sorted(modules)))
    """
)


def test_every_runtime_module_imports_where_torch_training_export_and_tensorrt_cannot():
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.split()
    for module in ("pipeline", "folder", "grid", "cli", "backends", "backends.onnxruntime", "backends.tensorrt"):
        assert f"deghost.runtime.{module}" in imported
