"""One Pipeline shared by threads (issue 25), as a threaded web server or a worker pool embeds it: 4 threads ×
3 edits on one Pipeline succeed on every CPU backend and equal the same edits run one after another."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deghost.runtime.pipeline import Pipeline
from tests.helpers.cpu_bf16 import bf16_missing

THREADS, EDITS = 4, 2  # every thread edits while the others do; a third edit each added ~17 s per backend


def cpu_backends() -> list[tuple[str, str]]:
    """(backend, precision) of every CPU backend installed: OpenVINO f32, bf16 where the CPU computes it
    natively, ONNX Runtime."""
    found = [("onnxruntime", "fp32")]
    try:
        import openvino  # noqa: F401
    except ImportError:
        return found
    found.append(("openvino", "fp32"))
    if bf16_missing() is None:
        found.append(("openvino", "bf16"))
    return found


def faces(count: int, side: int) -> list[np.ndarray]:
    """Distinct aligned inputs, float32 [1,3,S,S] in [-1,1]."""
    rng = np.random.default_rng(11)
    return [rng.uniform(-1, 1, (1, 3, side, side)).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize(("backend", "precision"), cpu_backends())
def test_four_threads_sharing_one_pipeline_all_succeed_and_equal_the_sequential_edits(tiny_onnx_dir, backend,
                                                                                      precision, tmp_path):
    with Pipeline.load(tiny_onnx_dir, backend=backend, precision=precision, device="cpu", cache=tmp_path) as pipe:
        inputs = faces(THREADS * EDITS, pipe.preset.image_size)
        expected = [pipe.edit(image, "smile", 20.0, "network").output for image in inputs]
        got: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(THREADS)

        def work(thread: int) -> None:
            start.wait(timeout=60)
            for k in range(EDITS):
                index = thread * EDITS + k
                try:
                    got[index] = pipe.edit(inputs[index], "smile", 20.0, "network").output
                except BaseException as error:  # noqa: BLE001 - every failure is reported below
                    errors.append(error)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert sorted(got) == list(range(THREADS * EDITS))
        for index, output in got.items():
            np.testing.assert_array_equal(output, expected[index])
        if backend == "openvino":  # the threads ran on requests of one compiled graph per stage, not copies
            assert all(pipe.backend(stage).requests <= THREADS for stage in ("encoder", "generator", "suppressor"))
