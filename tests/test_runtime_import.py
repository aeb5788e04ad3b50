"""The runtime and the root package are torch-free: every module imports with torch, training and export made
unimportable, and the `deghost` command line builds without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FORBID = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    FORBIDDEN = ("torch", "torchvision", "deghost.training", "deghost.export", "tensorrt", "cuda")

    class Forbid:
        def find_spec(self, name, path=None, target=None):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                raise ImportError(f"the runtime imported {name}")

    sys.meta_path.insert(0, Forbid())
    """
)

BLOCKED_IMPORT_CHECK = FORBID + textwrap.dedent(
    """
    import deghost.apps
    import deghost.runtime

    # The library and the applications that run it; `deghost eval` (apps.eval) scores with torch by design.
    modules = [m.name for m in pkgutil.walk_packages(deghost.runtime.__path__, "deghost.runtime.")]
    modules += [m.name for m in pkgutil.walk_packages(deghost.apps.__path__, "deghost.apps.")
                if not m.name.startswith("deghost.apps.eval")]
    for name in modules:
        importlib.import_module(name)
    print(" ".join(sorted(modules)))
    """
)


def test_every_runtime_module_imports_where_torch_training_export_and_tensorrt_cannot():
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.split()
    for module in ("pipeline", "grid", "backends", "backends.onnxruntime", "backends.tensorrt"):
        assert f"deghost.runtime.{module}" in imported
    for module in ("cli", "bench", "edit.cli", "edit.folder", "serve.service", "demo.session"):
        assert f"deghost.apps.{module}" in imported


ROOT_IMPORT_CHECK = FORBID + textwrap.dedent(
    """
    import deghost

    modules = [f"deghost.{m.name}" for m in pkgutil.iter_modules(deghost.__path__) if not m.ispkg]
    for name in modules:
        importlib.import_module(name)
    print(" ".join(sorted(modules)))
    """
)

TORCH_FREE_PARSER = textwrap.dedent(
    """
    import sys

    class Forbid:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"building the parser imported {name}")

    sys.meta_path.insert(0, Forbid())
    from deghost.apps.cli import build_parser

    build_parser().parse_args(["edit", "--help"])
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_every_root_package_module_imports_where_torch_training_export_and_tensorrt_cannot():
    done = _run(ROOT_IMPORT_CHECK)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.split()
    for module in ("attributes", "files", "manifest", "presets", "stages"):
        assert f"deghost.{module}" in imported


def test_the_command_line_builds_and_helps_without_torch():
    done = _run(TORCH_FREE_PARSER)
    assert done.returncode == 0, done.stderr
    assert "deghost edit" in done.stdout
