"""Network runners, called by the C++ sampling loop.

Every runner implements ``_core.Runner``: ``score(y, t, eps_out)`` and ``dse_grad(y, x_t, t,
grad_out)`` (an egsde engine), or ``student(y, x_t, t, eps_out)`` (a distilled engine, whose
sampler is built with ``student=True``), on views of the sampler's own buffers (host memory for a
CPU sampler, device memory for a CUDA one), writing the outputs in place: no copies per step. The
graph runners run the graphs of the engine's kind (``EngineDir.contracts``).

* ``OrtRunner``: ONNX Runtime with IOBinding on those buffers (CPU or CUDA execution provider),
  running the engine's graphs in the precision asked (``EngineDir.graph_file``).
* ``TensorRTRunner``: TensorRT plans, ``execute_async_v3`` on the sampler's stream, capturable
  into the sampler's CUDA graph (unverified: TensorRT cannot be installed where this project is
  developed).
* ``CompiledRunner``: the AOTInductor packages of ``egsde-rt build --backend compiled``.
* ``TorchRunner``: eager PyTorch models (the engine's weights, or any models given to
  ``egsde_rt.runtime.model_loop.translate``); ``StudentRunner``: a distilled engine's student.

The PyTorch runners (compiled, torch) run inside ``network_fns.tf32_mode(precision)``, so that
fp32 is IEEE float32 and tf32 is TF32; ONNX Runtime's CUDA provider gets ``use_tf32`` on for tf32
only (fp16 and bf16 run the graphs' reduced-precision variants, whose casts say where).
"""

from __future__ import annotations

import inspect
import logging
from contextlib import nullcontext

import numpy as np
import torch

from .. import _core
from ..engine import CONTRACTS, DSE_GRAD, SCORE, STUDENT, EngineDir
from ..engine.plans import import_tensorrt
from ..errors import EgsdeError, EngineDirError
from ..models.network_fns import dse_gradient, score_function, tf32_mode

log = logging.getLogger("egsde_rt")


def _ort():
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise EgsdeError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from err
    return onnxruntime


def as_tensor(ref) -> torch.Tensor:
    """A zero-copy torch view of a sampler buffer (host or CUDA).

    A CUDA buffer is wrapped on the current device named with its index: given only "cuda",
    PyTorch would ask the driver which device the pointer lives on (cudaPointerGetAttributes),
    a query that has no place inside a CUDA-graph capture."""
    if ref.device == "cuda":
        return torch.as_tensor(ref, device=torch.device("cuda", torch.cuda.current_device()))
    return torch.from_numpy(np.asarray(ref))


def on_stream(ref):
    """Run PyTorch work on the sampler's CUDA stream (a no-op for host buffers)."""
    if ref.device == "cuda":
        return torch.cuda.stream(torch.cuda.ExternalStream(ref.stream))
    return nullcontext()


class TorchRunner(_core.Runner):
    """Runs the score model and the DSE gradient in eager PyTorch on the sampler's buffers (in
    the models' dtype; ``grad_scale``: the float16 gradient scaling of ``network_fns``; TF32 on
    only for ``precision="tf32"``)."""

    def __init__(self, score_model: torch.nn.Module, dse: torch.nn.Module, *, s1: str, score_kind: str,
                 class_label: int | None = None, grad_scale: float = 1.0, precision: str = "fp32"):
        super().__init__()
        self.eps_fn = score_function(score_model, score_kind, class_label)
        self.dse, self.s1, self.grad_scale, self.precision = dse, s1, grad_scale, precision

    def score(self, y, t, eps_out):
        with on_stream(y), tf32_mode(self.precision):
            as_tensor(eps_out).copy_(self.eps_fn(as_tensor(y), as_tensor(t)))

    def dse_grad(self, y, x_t, t, grad_out):
        with on_stream(y), tf32_mode(self.precision):
            grad = dse_gradient(self.dse, self.s1, as_tensor(y), as_tensor(x_t), as_tensor(t), self.grad_scale)
            as_tensor(grad_out).copy_(grad)


class StudentRunner(_core.Runner):
    """A distilled engine's one network (``models.student.GuidedStudent``) in eager PyTorch on the
    sampler's buffers: ``student(y, x_t, t, eps_out)``, the guided eps (a sampler built with
    ``student=True`` calls nothing else)."""

    def __init__(self, network: torch.nn.Module, precision: str = "fp32"):
        super().__init__()
        self.network, self.precision = network, precision

    def student(self, y, x_t, t, eps_out):
        with on_stream(y), torch.no_grad(), tf32_mode(self.precision):
            as_tensor(eps_out).copy_(self.network(as_tensor(y), as_tensor(t), as_tensor(x_t)))

    def score(self, y, t, eps_out):
        raise EgsdeError("a student runner has no score network: build its sampler with student=True")

    def dse_grad(self, y, x_t, t, grad_out):
        raise EgsdeError("a student runner has no expert: build its sampler with student=True")


class GraphRunner(_core.Runner):
    """A runner over an engine's graphs (score and dse_grad, or student): subclasses implement
    ``_run(contract, inputs, output)``."""

    def _run(self, contract, inputs, output) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def score(self, y, t, eps_out):
        self._run(SCORE, (y, t), eps_out)

    def dse_grad(self, y, x_t, t, grad_out):
        self._run(DSE_GRAD, (y, x_t, t), grad_out)

    def student(self, y, x_t, t, eps_out):
        self._run(STUDENT, (y, x_t, t), eps_out)


def load_compiled_package(path):
    """An AOTInductor package loaded so that its runs can be captured into a CUDA graph.

    By default (``run_single_threaded=False``) the package's model container queries a CUDA
    event (``cudaEventQuery``) on every run after the first, which is illegal during stream
    capture: the capture is invalidated. ``run_single_threaded=True`` (PyTorch's flag "to avoid
    conflicts with CUDA graphs") drops that bookkeeping and the container's lock; the runner's
    callers serialise their calls (a ``Translator`` runs one translation at a time). A PyTorch
    without the flag loads the package as before, and its runs are not capturable."""
    load = torch._inductor.aoti_load_package
    if "run_single_threaded" in inspect.signature(load).parameters:
        return load(str(path), run_single_threaded=True)
    log.warning("egsde-rt: torch %s's aoti_load_package has no run_single_threaded flag: compiled plans "
                "will run uncaptured on CUDA", torch.__version__)
    return load(str(path))


class CompiledRunner(GraphRunner):
    """The engine's AOTInductor packages (``{graph name: .pt2 path}``), run on the sampler's
    buffers (zero-copy views in, one copy of the result out), on the sampler's stream, with TF32
    on only for ``precision="tf32"`` (convolutions the packages hand to cuDNN read the flag)."""

    def __init__(self, plan_files: dict, precision: str = "fp32"):
        super().__init__()
        self.precision = precision
        self.graphs = {}
        for name, path in plan_files.items():
            try:
                self.graphs[name] = load_compiled_package(path)
            except Exception as err:  # noqa: BLE001 - the loader's errors are many and internal
                raise EngineDirError(f"{path}: PyTorch cannot load this compiled plan ({type(err).__name__}: "
                                     f"{str(err).splitlines()[0] if str(err) else ''}): rebuild it "
                                     "(`egsde-rt build ENGINE_DIR --backend compiled ...`)") from err

    def _run(self, contract, inputs, output) -> None:
        with on_stream(output), torch.no_grad(), tf32_mode(self.precision):
            result = self.graphs[contract.name](*(as_tensor(ref) for ref in inputs))
            as_tensor(output).copy_(result)


class OrtRunner(GraphRunner):
    """ONNX Runtime sessions of the engine's graphs (score.onnx and dse_grad.onnx, or student.onnx),
    bound to the sampler's buffers."""

    def __init__(self, engine: EngineDir, *, device: str = "cpu", device_id: int = 0, threads: int = 0,
                 stream: int = 0, precision: str = "fp32"):
        """``stream``: the CUDA stream (a handle) the sampler orders its work on; ONNX Runtime then
        computes on it too, and no synchronisation is needed between the sampler and a graph.
        ``precision``: the graphs' (fp16 and bf16: their variants; tf32: TF32 on in the CUDA provider)."""
        super().__init__()
        engine.require_graphs(f"onnxruntime-{device}")
        files = {contract.name: engine.graph_file(contract.name, precision) for contract in engine.contracts}
        ort = _ort()
        self.device, self.device_id, self.stream = device, device_id, stream
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads must sleep, not spin: between two graphs the sampler's own
        # kernels (and the other session) need the cores (measured by egsde-rt bench: spinning
        # made the native low-pass gradient 500x slower on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:  # the Translator's (cpu_threads); 0: ONNX Runtime's default, the host's cores
            options.intra_op_num_threads = threads
        if device == "cuda":
            # TF32 only for tf32 (the CUDA provider's default is use_tf32=1)
            cuda_options = {"device_id": device_id, "use_tf32": "1" if precision == "tf32" else "0"}
            if stream:
                cuda_options.update(has_user_compute_stream="1", user_compute_stream=str(stream))
            providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.sessions = {}
        for name, path in files.items():
            session = ort.InferenceSession(str(path), options, providers=providers)
            if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
                raise EgsdeError("ONNX Runtime could not enable its CUDA execution provider "
                                 f"(providers: {session.get_providers()})")
            self.sessions[name] = session

    def _run(self, contract, inputs, output) -> None:
        if inputs[0].device == "cuda" and inputs[0].stream != self.stream:
            _core.cuda_stream_synchronize(inputs[0].stream)  # the sampler's kernels must precede the graph
        binding = self.sessions[contract.name].io_binding()
        for name, ref in zip(contract.inputs, inputs):
            binding.bind_input(name, ref.device, self.device_id, np.float32, list(ref.shape), ref.ptr)
        binding.bind_output(contract.outputs[0], output.device, self.device_id, np.float32, list(output.shape),
                            output.ptr)
        self.sessions[contract.name].run_with_iobinding(binding)


class TensorRTRunner(GraphRunner):
    """TensorRT plans of the engine's graphs (built by ``egsde-rt build``), one execution context each;
    unverified here (TensorRT cannot be installed where egsde-rt is developed).

    Capturable into the sampler's CUDA graph (``Backend.capturable``): every call binds the
    sampler's own buffers (fixed addresses per sampler) with their shapes (fixed per sampler) and
    enqueues on the sampler's stream (``execute_async_v3``: no synchronisation, no allocation once
    the context has run a shape). TensorRT applies a shape change at the next enqueue, which must not
    be captured: ``run_captured`` runs each run's first update uncaptured, so the contexts have run
    the sampler's shapes before a step is captured or replayed.

    ``plan_files``: {graph name: ``VerifiedFile``} (``plans.matching_plans``): each plan is read
    once, its size and sha256 checked on the bytes read, and those same bytes deserialised (a plan
    replaced after its verification is refused, never loaded). A shape its plan's optimization
    profile does not take (``set_input_shape`` returns False) is an ``EgsdeError`` naming the shape
    and the profile."""

    def __init__(self, plan_files: dict):
        super().__init__()
        trt = import_tensorrt("the tensorrt backend")
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.plans, self.engines, self.contexts, self.profiles = dict(plan_files), {}, {}, {}
        for contract in (CONTRACTS[name] for name in self.plans):
            plan = self.plans[contract.name]
            engine = self.runtime.deserialize_cuda_engine(plan.read())
            if engine is None:
                raise EgsdeError(f"TensorRT could not deserialize {plan} (built for another GPU or TensorRT "
                                 "version? run `egsde-rt build` again)")
            self.engines[contract.name] = engine
            self.contexts[contract.name] = engine.create_execution_context()
            # each input's (min, opt, max) shapes in the plan's optimization profile (profile 0, the only one)
            self.profiles[contract.name] = {
                name: tuple(tuple(shape) for shape in engine.get_tensor_profile_shape(name, 0))
                for name in contract.inputs}

    def _run(self, contract, inputs, output) -> None:
        context = self.contexts[contract.name]
        for name, ref in zip(contract.inputs, inputs):
            if not context.set_input_shape(name, tuple(ref.shape)):
                self._refuse_shape(contract, name, tuple(ref.shape))
            context.set_tensor_address(name, ref.ptr)
        context.set_tensor_address(contract.outputs[0], output.ptr)
        if not context.execute_async_v3(stream_handle=inputs[0].stream):
            raise EgsdeError(f"TensorRT execution of {contract.name} failed")

    def _refuse_shape(self, contract, name: str, shape: tuple) -> None:
        low, _, high = self.profiles[contract.name][name]
        raise EgsdeError(f"the TensorRT plan {self.plans[contract.name]} does not take the shape {shape} of its input "
                         f"'{name}': its optimization profile takes {low} to {high} (batches {low[0]}..{high[0]}); "
                         "run batches in that range, or rebuild the plans for this one (`egsde-rt build ENGINE_DIR "
                         "--backend tensorrt --max-batch N`)")
