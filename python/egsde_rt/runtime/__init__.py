"""Running engines: the runners (ONNX Runtime CPU/CUDA, TensorRT, torch), backend selection, the
bridge to the native sampler, and the ``Translator``."""
