"""Kernel micro-benchmarks (``egsde-rt bench --kernels``): each native kernel against the eager
PyTorch ops it replaces.

The eager side is what the reference sampler does per step (``torch.randn``, tensor arithmetic,
autograd through the low-pass filter), on the same device. Times are medians over ``iters``
runs after warm-up; on CUDA they are taken with CUDA events, and the achieved bandwidth of each
kernel (bytes it must read and write / time) is reported.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import _core
from ..errors import ConfigError
from ..method.lowpass import LowPassFilter, lowpass_factors
from ..models.network_fns import input_gradient
from ..runtime.devices import cuda_usable
from ..method.similarity import lowpass_energy
from .machine import record_envelope

K = _core.kernels


@dataclass
class KernelResult:
    kernel: str
    native_ms: float
    eager_ms: float
    speedup: float
    bytes_moved: int
    native_gbs: float


def _timer(device: str):
    if device == "cuda":
        def run(fn, iters):
            times = []
            for _ in range(iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            return statistics.median(times)
    else:
        def run(fn, iters):
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(times)
    return run


def _buffers(device: str, n: int, count: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n, generator=g) for _ in range(count)]
    if device == "cuda":
        return [t.cuda() for t in tensors]
    return tensors


def _native(t: torch.Tensor):
    """What the kernel bindings take: a numpy view on the host, the tensor itself on CUDA."""
    return t.numpy() if t.device.type == "cpu" else t


def run_benchmarks(*, batch=1, size=256, down_N=32, device="cpu", iters=20, warmup=3) -> list[KernelResult]:
    if device == "cuda" and not cuda_usable()[0]:
        raise ConfigError(f"the kernel benchmark on cuda: {cuda_usable()[1]}")
    shape = (batch, 3, size, size)
    n = int(np.prod(shape))
    per_image = n // batch
    timer = _timer(device)
    y, x, eps, gs, gi, out = _buffers(device, n, 6)
    results = []

    def measure(name, native_fn, eager_fn, bytes_moved):
        for _ in range(warmup):
            native_fn()
            eager_fn()
        native_ms, eager_ms = timer(native_fn, iters), timer(eager_fn, iters)
        results.append(KernelResult(name, native_ms, eager_ms, eager_ms / native_ms, bytes_moved,
                                    bytes_moved / (native_ms * 1e-3) / 1e9))

    f32 = 4
    # The per-image seeds live where the kernels read them (on CUDA a device array: no upload per call).
    seeds = _native(torch.from_numpy(np.arange(7, 7 + batch, dtype=np.uint64)).to(device))
    measure("philox_normal", lambda: K.philox_normal(_native(out), batch, per_image, seeds, 0, 1),
            lambda: torch.randn(shape, device=device), n * f32)
    measure("axpby", lambda: K.axpby(_native(x), _native(eps), _native(out), 0.8, 0.6),
            lambda: 0.8 * x + 0.6 * eps, 3 * n * f32)

    low = size // down_N
    dh, uh = (torch.from_numpy(np.ascontiguousarray(m, np.float32)).to(device) for m in lowpass_factors(size, down_N))
    params = K.LowpassParams(down_h=_native(dh), up_h=_native(uh), down_w=_native(dh), up_w=_native(uh), batch=batch,
                             channels=3, height=size, width=size, low_h=low, low_w=low)
    workspace = torch.zeros(K.lowpass_workspace_floats(params), device=device)
    params.workspace = _native(workspace)
    lowpass = LowPassFilter(size, size, down_N, device=device)
    y4, x4 = y.view(shape), x.view(shape)
    for kind, energy in (("neg_l2", _core.EnergyKind.NEG_L2), ("cosine", _core.EnergyKind.COSINE)):
        def native_grad(energy=energy):
            K.lowpass_energy_grad(params, _native(y), _native(x), _native(out), energy)

        def eager_grad(kind=kind):
            low_x = lowpass.apply(x4)
            return input_gradient(lambda v: lowpass_energy(kind, lowpass.apply(v), low_x), y4)

        measure(f"lowpass_energy_grad[{kind}]", native_grad, eager_grad, 3 * n * f32)

    c = dict(inv_sqrt_alpha=1.0001, eps_coef=0.0123, ls_w=0.51, li_w=0.0021, sigma=0.091)

    def eager_update():
        mean = c["inv_sqrt_alpha"] * (y - c["eps_coef"] * eps)
        mean = mean - c["ls_w"] * gs
        mean = mean - c["li_w"] * gi
        return mean + c["sigma"] * torch.randn_like(y)

    update = K.UpdateParams(y=_native(y), eps=_native(eps), grad_s=_native(gs), grad_i=_native(gi), out=_native(out),
                            batch=batch, per_image=per_image, draw=2, **c)
    measure("egsde_update", lambda: K.egsde_update(update, seed=seeds), eager_update, 5 * n * f32)
    return results


def format_table(results: list[KernelResult], device: str) -> str:
    lines = [f"{'kernel':28s} {'native ms':>10s} {'eager ms':>10s} {'speedup':>8s} {'GB/s':>8s}"]
    for r in results:
        lines.append(f"{r.kernel:28s} {r.native_ms:10.3f} {r.eager_ms:10.3f} {r.speedup:7.2f}x {r.native_gbs:8.1f}")
    return "\n".join(lines)


def main_bench(*, batch, size, down_N, device, iters, json_path: str | None) -> int:
    results = run_benchmarks(batch=batch, size=size, down_N=down_N, device=device, iters=iters)
    print(f"egsde-rt kernel benchmark: batch {batch}, 3x{size}x{size}, down_N {down_N}, {device}, "
          f"median of {iters}")
    print(format_table(results, device))
    if json_path:
        record = {
            **record_envelope(device),
            "shape": {"batch": batch, "channels": 3, "size": size, "down_N": down_N},
            "iters": iters, "results": [asdict(r) for r in results],
        }
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0
