"""The runtime library a tool embeds, torch-free: the Pipeline over the exported engines (TensorRT, ONNX Runtime,
OpenVINO), faces, blending, images and directions. The applications that drive it live in deghost.apps."""
