"""deghost: face-attribute editing with StyleGAN2 and fast ghosting-artifact suppression.

The data flow is image → invert (pSp) → edit (w + α·n̂) → fuse (Diff-CAM mask) → suppress
(MAResU-Net). `deghost.training` makes weights (torch), `deghost.export` turns them into ONNX
graphs and TensorRT engines, `deghost.runtime` runs those engines without torch, and `deghost.apps`
are the applications over it (the `deghost` command line, the service, the demo). This package itself
holds the facts every layer shares (docs/design.md §5).
"""

__version__ = "0.1.0"

# Before any deghost module imports cv2: OpenCV reads its decoders' pixel cap once, when cv2 is loaded.
from deghost.runtime import limits as _limits  # noqa: E402, F401
