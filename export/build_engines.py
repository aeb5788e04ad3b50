"""Build the ONNX graphs and TensorRT engines of every stage: `python export/build_engines.py --help`.

The same as `deghost build`; the work is done by `deghost.export.build`.
"""

import sys
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path, where export/tensorrt.py would shadow
# the real `tensorrt` package; the modules here are imported as `deghost.export.*` instead.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from deghost.export.build import main  # noqa: E402  (after the sys.path fix above)

if __name__ == "__main__":
    sys.exit(main())
