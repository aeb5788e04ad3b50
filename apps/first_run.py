"""The verdicts of scripts/gpu_first_run.sh that need more than an exit status (torch-free).

`python -m deghost.apps.first_run pytest JUNIT_XML` reads the junit XML of `pytest -m "gpu or tensorrt"` on a
GPU machine: every GPU or TensorRT test must have run and passed there. tests/conftest.py records each
such test's marker as a junit property (MARKER_PROPERTY), so a skip is judged by the test, not by the
word "skipped" in pytest's output:

- a failure or an error: FAIL, with its message;
- a gpu/tensorrt test that skipped: FAIL, with its reason (on the GPU machine it had to run);
- a module skipped at collection (ray or gradio missing in a GPU install): not a GPU test, listed only;
- no GPU test run at all: FAIL.

Exit status 0 for PASS, 1 for FAIL; one line per finding, the verdict line first.

`python -m deghost.apps.first_run backends` says where each backend really runs: ONNX Runtime from a real
session's providers, TensorRT and cuda-python from the GPU probe, PyTorch from torch.cuda; exit status 1
when ONNX Runtime or TensorRT does not run on the GPU.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

MARKER_PROPERTY = "deghost_marker"  # written by tests/conftest.py for tests marked gpu or tensorrt
GPU_MARKERS = ("gpu", "tensorrt")
COLLECTION_SKIP = "collection skipped"  # pytest's junit message for a module skipped while collecting


@dataclass
class Verdict:
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    not_gpu: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.passed > 0

    def lines(self) -> list[str]:
        if self.ok:
            head = f"PASS: {self.passed} GPU/TensorRT tests passed"
        elif not self.failures:
            head = "FAIL: no GPU/TensorRT test ran"
        else:
            head = f"FAIL: {len(self.failures)} GPU/TensorRT test(s) failed or skipped, {self.passed} passed"
        return ([head] + [f"  FAIL {line}" for line in self.failures]
                + [f"  not a GPU test, skipped at collection: {line}" for line in self.not_gpu])


def _test_id(case: ElementTree.Element) -> str:
    classname, name = case.get("classname", ""), case.get("name", "")
    return f"{classname}::{name}" if classname else name


def _markers(case: ElementTree.Element) -> set[str]:
    return {prop.get("value", "") for prop in case.iter("property") if prop.get("name") == MARKER_PROPERTY}


def pytest_verdict(junit_xml: Path) -> Verdict:
    """The verdict on a `pytest -m "gpu or tensorrt" --junitxml` run (see the module docstring)."""
    verdict = Verdict()
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        test = _test_id(case)
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            verdict.failures.append(f"{test}: {problem.get('message', '').strip() or problem.tag}")
        elif skipped is not None:
            reason = skipped.get("message", "").strip()
            if skipped.get("message") == COLLECTION_SKIP and not _markers(case):
                verdict.not_gpu.append(f"{test}: {(skipped.text or '').strip()}")
            else:  # marked gpu/tensorrt, or selected by the marker expression: it had to run here
                verdict.failures.append(f"{test}: skipped on the GPU machine ({reason})")
        else:
            verdict.passed += 1
    return verdict


def backend_devices() -> tuple[list[str], bool]:
    """(one line per backend: where it runs, whether ONNX Runtime and TensorRT both run on the GPU)."""
    from importlib.util import find_spec

    from deghost.runtime import gpu_platform
    from deghost.runtime.backends import onnxruntime as ort_backend
    from deghost.runtime.backends.onnxruntime_cuda import session_providers

    problem = ort_backend.gpu_install_problem()
    lines = [f"onnxruntime {ort_backend.ort.__version__} ({', '.join(ort_backend.installed_distributions())}): "
             f"a session asked for CUDA runs on {session_providers()}" + (f"; {problem}" if problem else "")]
    try:
        platform = gpu_platform.platform()
        lines.append(f"tensorrt {platform.tensorrt_version}: {platform.gpu_name} (compute capability "
                     f"{platform.compute_capability}), through cuda-python")
        missing = None
    except gpu_platform.GPUUnavailable as error:
        missing = str(error)
        lines.append(f"tensorrt: not usable: {missing}")
    if find_spec("torch") is not None:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}): {device}")
    lines.append("openvino: CPU only")
    return lines, problem is None and missing is None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["backends"] and len(args) == 1:
        lines, on_gpu = backend_devices()
        print("\n".join(lines))
        return 0 if on_gpu else 1
    if len(args) != 2 or args[0] != "pytest":
        print("usage: python -m deghost.apps.first_run pytest JUNIT_XML | backends", file=sys.stderr)
        return 2
    verdict = pytest_verdict(Path(args[1]))
    print("\n".join(verdict.lines()))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
