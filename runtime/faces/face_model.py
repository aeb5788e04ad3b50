"""The two bundled face models (MediaPipe BlazeFace short range and face mesh, Apache-2.0, converted to
ONNX by CONVERTER, a source-checkout script the wheel does not ship) opened on ONNX Runtime's CPU provider.

They are small (0.4 MB + 2.4 MB, a few ms per run), so they stay on the CPU whatever backend the
editing stages use: a GPU round trip would cost more than the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).resolve().parent / "models"
DETECTOR_FILE = MODEL_DIR / "face_detector.onnx"  # [1,128,128,3] in [-1,1] → regressors [1,896,16], scores
LANDMARKS_FILE = MODEL_DIR / "face_landmarks.onnx"  # [1,192,192,3] in [0,1] → [1,1,1,1404], presence logit
CHECKOUT_DIR = "runtime/faces/models"  # MODEL_DIR as a source checkout names it
CONVERTER = f"{CHECKOUT_DIR}/convert_mediapipe.py"  # in a source checkout only; the wheel does not ship it


class FaceModel:
    """One ONNX graph with a single image input: `run(x)` → its outputs in graph order."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the face models ship with deghost. Installed as a package: reinstall it "
                "(pip install --force-reinstall deghost). In a source checkout: restore it "
                f"(git checkout -- {CHECKOUT_DIR}/) or regenerate the models with {CONVERTER} (its docstring says how)."
            )
        import onnxruntime as ort  # here: a run without photos (aligned crops on OpenVINO) never loads it

        options = ort.SessionOptions()
        # One thread whatever the editing stages use: these graphs run 1-2 ms, too short for a thread pool
        # to pay; measured with 2 threads on a busy 2-core CPU, the landmarks of a face took 2x longer.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})
