"""Network runners over an engine directory, called by the C++ sampling loop.

Every runner implements ``_core.Runner``: ``score(y, t, eps_out)`` and ``dse_grad(y, x_t, t,
grad_out)`` on views of the sampler's own buffers (host memory for a CPU sampler, device memory
for a CUDA one), writing the outputs in place: no copies per step.

* ``OrtRunner``: ONNX Runtime with IOBinding on those buffers (CPU or CUDA execution provider).
* ``TensorRTRunner``: TensorRT plans, ``execute_async_v3`` on the sampler's stream (unverified:
  TensorRT cannot be installed where this project is developed).
* ``egsde_rt.native.TorchRunner``: eager PyTorch from the engine's ``torch/`` weights.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ..errors import EgsdeError
from ..export.contracts import DSE_GRAD, SCORE
from .engine_dir import EngineDir


def _ort():
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise EgsdeError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from err
    return onnxruntime


class GraphRunner(_core.Runner):
    """A runner over the two exported graphs: subclasses implement ``_run(contract, inputs, output)``."""

    def _run(self, contract, inputs, output) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def score(self, y, t, eps_out):
        self._run(SCORE, (y, t), eps_out)

    def dse_grad(self, y, x_t, t, grad_out):
        self._run(DSE_GRAD, (y, x_t, t), grad_out)


class OrtRunner(GraphRunner):
    """ONNX Runtime sessions of score.onnx and dse_grad.onnx, bound to the sampler's buffers."""

    def __init__(self, engine: EngineDir, *, device: str = "cpu", device_id: int = 0, threads: int = 0):
        super().__init__()
        ort = _ort()
        self.device, self.device_id = device, device_id
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if device == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.sessions = {}
        for contract in (SCORE, DSE_GRAD):
            path = engine.file(engine.manifest.graphs[contract.name].file)
            session = ort.InferenceSession(str(path), options, providers=providers)
            if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
                raise EgsdeError("ONNX Runtime could not enable its CUDA execution provider "
                                 f"(providers: {session.get_providers()})")
            self.sessions[contract.name] = session

    def _run(self, contract, inputs, output) -> None:
        if inputs[0].device == "cuda":
            _core.cuda_stream_synchronize(inputs[0].stream)  # the sampler's kernels precede the graph
        binding = self.sessions[contract.name].io_binding()
        for name, ref in zip(contract.inputs, inputs):
            binding.bind_input(name, ref.device, self.device_id, np.float32, list(ref.shape), ref.ptr)
        binding.bind_output(contract.outputs[0], output.device, self.device_id, np.float32, list(output.shape),
                            output.ptr)
        self.sessions[contract.name].run_with_iobinding(binding)


class TensorRTRunner(GraphRunner):
    """TensorRT plans of both graphs (built by ``egsde-rt build``); unverified here."""

    def __init__(self, plan_files: dict):
        super().__init__()
        try:
            import tensorrt as trt
        except ImportError as err:
            raise EgsdeError("tensorrt is not installed (pip install tensorrt on a CUDA machine)") from err
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engines, self.contexts = {}, {}
        for contract in (SCORE, DSE_GRAD):
            engine = self.runtime.deserialize_cuda_engine(open(plan_files[contract.name], "rb").read())
            if engine is None:
                raise EgsdeError(f"TensorRT could not deserialize {plan_files[contract.name]} (built for "
                                 "another GPU or TensorRT version? run `egsde-rt build` again)")
            self.engines[contract.name] = engine
            self.contexts[contract.name] = engine.create_execution_context()

    def _run(self, contract, inputs, output) -> None:
        context = self.contexts[contract.name]
        for name, ref in zip(contract.inputs, inputs):
            context.set_input_shape(name, tuple(ref.shape))
            context.set_tensor_address(name, ref.ptr)
        context.set_tensor_address(contract.outputs[0], output.ptr)
        if not context.execute_async_v3(stream_handle=inputs[0].stream):
            raise EgsdeError(f"TensorRT execution of {contract.name} failed")
