"""Markers that skip cleanly when the hardware or package is absent (see pyproject.toml)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    """The tests' compiled stages go to a folder of their own, removed at the end, not the user's cache."""
    if "DEGHOST_CACHE_DIR" not in os.environ:
        os.environ["DEGHOST_CACHE_DIR"] = config._deghost_cache = tempfile.mkdtemp(prefix="deghost-test-cache-")


def pytest_unconfigure(config):
    if getattr(config, "_deghost_cache", None):
        shutil.rmtree(config._deghost_cache, ignore_errors=True)


def _gpu_unavailable() -> str | None:
    """Why no CUDA GPU is usable: cuda-python's probe (the runtime's), else PyTorch's CUDA."""
    from deghost.runtime.gpu_platform import gpu_unavailable

    reason = gpu_unavailable()
    if reason is not None and importlib.util.find_spec("torch") is not None:
        import torch

        return None if torch.cuda.is_available() else f"needs a CUDA GPU ({reason})"
    return reason and f"needs a CUDA GPU ({reason})"


def pytest_collection_modifyitems(config, items):
    from deghost.apps.first_run import MARKER_PROPERTY
    from deghost.runtime.gpu_platform import tensorrt_platform_missing

    markers = {marker for item in items for marker in ("gpu", "tensorrt") if marker in item.keywords}
    reasons = {
        "slow": None if config.getoption("--runslow") else "slow test: run with --runslow",
        "gpu": _gpu_unavailable() if "gpu" in markers else None,
        # TensorRT, cuda-python (which the TensorRT backend and the build's validation use) and a GPU.
        "tensorrt": tensorrt_platform_missing() if "tensorrt" in markers else None,
    }
    for item in items:
        for marker, reason in reasons.items():
            if marker in ("gpu", "tensorrt") and marker in item.keywords:  # for the first-run script's verdict
                item.user_properties.append((MARKER_PROPERTY, marker))
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def small_disk(tmp_path):
    """A folder on its own 2 MiB file system, unmounted after the test (tests/helpers/small_disk.py)."""
    from tests.helpers.small_disk import small_disk_at

    with small_disk_at(tmp_path / "small_disk") as folder:
        yield folder


@pytest.fixture(scope="module")
def module_tmp_path(request, tmp_path_factory):
    """A folder that lives as long as the test module, removed when the module ends: module-scoped fixtures
    write their data here, so the suite's disk use peaks at one module's data, not at the sum of all."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: on a busy 2-core machine two threads mostly wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory):
    """The tiny preset's six stages as validated FP32 ONNX graphs, built once per session (~2 min on 2 cores).

    Folder: <stage>.onnx, directions/<attribute>.npy and manifest.json (one Artifact per graph, with
    its validation errors against PyTorch), all untrained: the build's `--random-init 0 --onnx-only`.
    """
    from deghost.export.build import BuildOptions, build

    out = tmp_path_factory.mktemp("tiny_onnx")
    build(BuildOptions(out=out, preset="tiny", random_init=0, onnx_only=True, precision="fp32"), log=lambda _: None)
    return out
