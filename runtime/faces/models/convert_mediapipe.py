"""Reproduce the two face models shipped beside this script from MediaPipe's Apache-2.0 `.tflite` files.

    face_detector.onnx   ← mediapipe/modules/face_detection/face_detection_short_range.tflite (BlazeFace
                           short range: 128² input, 896 anchors, box + 6 keypoints per anchor)
    face_landmarks.onnx  ← mediapipe/modules/face_landmark/face_landmark.tflite (face mesh: 192² input,
                           468 3-D landmarks + a face-presence logit)

Run once, in a THROW-AWAY environment (mediapipe pins numpy<2 and protobuf<5, so it must never be a
dependency of deghost; later mediapipe wheels no longer bundle these files):

    python3 -m venv /tmp/mpconv
    /tmp/mpconv/bin/pip install mediapipe==0.10.21 tf2onnx==1.17.0 tensorflow-cpu==2.19.1
    /tmp/mpconv/bin/python runtime/faces/models/convert_mediapipe.py

The script writes the .onnx files and prints their sha256 (compare with models/NOTICE). Licence:
Apache-2.0, see LICENSE-mediapipe and NOTICE in this folder.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import mediapipe  # only in the throw-away environment

HERE = Path(__file__).resolve().parent
MODELS = {
    "face_detector.onnx": "modules/face_detection/face_detection_short_range.tflite",
    "face_landmarks.onnx": "modules/face_landmark/face_landmark.tflite",
}
OPSET = 13  # ONNX Runtime >= 1.17 runs it; tf2onnx's tflite path is well tested there


def main() -> None:
    root = Path(mediapipe.__file__).parent
    print(f"mediapipe {mediapipe.__version__} at {root}")
    for onnx_name, tflite in MODELS.items():
        source, target = root / tflite, HERE / onnx_name
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(source), "--output", str(target),
                        "--opset", str(OPSET)], check=True)
        print(f"{target.name}: {target.stat().st_size} bytes sha256 {hashlib.sha256(target.read_bytes()).hexdigest()}"
              f" (from {tflite}, sha256 {hashlib.sha256(source.read_bytes()).hexdigest()})")


if __name__ == "__main__":
    main()
