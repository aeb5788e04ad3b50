"""Markers that skip cleanly when the hardware or package is absent (see pyproject.toml)."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda_available()
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    reasons = {
        "slow": None if config.getoption("--runslow") else "slow test: run with --runslow",
        "gpu": None if has_cuda else "needs a CUDA GPU",
        "tensorrt": None if (has_tensorrt and has_cuda) else "needs TensorRT (pip install deghost[tensorrt]) and a GPU",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


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
