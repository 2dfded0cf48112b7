"""The DSE input gradient as a plain forward graph (no autograd at run time).

The gradient of the domain-specific similarity (``DSEGradient.functional``) is traced with a
symbolic batch (``batch_tracing``); the backward ops that ONNX has no translation for become
forward ops: ``convolution_backward`` into a transposed convolution (only the input gradient is
needed: the weights are constants), ``avg_pool2d_backward`` (non-overlapping windows, as the
DSE's down-sampling) into a spread of the gradient, and softmax's backward by torch's own
decomposition. ``extra_decompositions`` and ``functional`` shape the graph for its consumer
(``fx_translation``: the ONNX exporter's decompositions, no in-place ops). The result is an
``nn.Module`` whose forward is ``(y, x_t, t) -> d/dy sum_batch S1(F(y, t), F(x_t, t))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._decomp import get_decompositions

from ..errors import EgsdeError
from ..method.similarity import dse_similarity
from .batch_tracing import trace_batched

aten = torch.ops.aten


def _convolution_backward(grad_out, x, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    if transposed:
        raise EgsdeError("exporting the gradient of a transposed convolution is not supported")
    grad_input = None
    if output_mask[0]:
        kernel = weight.shape[2:]
        out_pad = []
        for i, k in enumerate(kernel):
            covered = (grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k - 1) + 1
            out_pad.append(x.shape[2 + i] - covered)
        grad_input = aten.convolution(grad_out, weight, None, stride, padding, dilation, True, out_pad, groups)
    if output_mask[1] or output_mask[2]:
        raise EgsdeError("the exported gradient must not need weight or bias gradients")
    return grad_input, None, None


def _avg_pool2d_backward(grad_out, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override):
    kh, kw = kernel_size
    stride = tuple(stride) or (kh, kw)
    if stride != (kh, kw) or any(padding) or ceil_mode:
        raise EgsdeError("only non-overlapping average pooling can be exported in a gradient graph")
    b, c, ho, wo = grad_out.shape
    grad = grad_out[:, :, :, None, :, None].expand(b, c, ho, kh, wo, kw).reshape(b, c, ho * kh, wo * kw)
    grad = grad / (divisor_override or kh * kw)
    height, width = x.shape[-2:]
    if (height, width) != (ho * kh, wo * kw):
        grad = F.pad(grad, (0, width - wo * kw, 0, height - ho * kh))
    return grad


def gradient_decompositions() -> dict:
    table = get_decompositions([aten._softmax_backward_data])
    table[aten.convolution_backward.default] = _convolution_backward
    table[aten.avg_pool2d_backward.default] = _avg_pool2d_backward
    return table


class DSEGradient(torch.nn.Module):
    """Eager form: (y, x_t, t) -> d/dy sum_batch S1(F(y, t), F(x_t, t)) by autograd, under any
    grad mode (the features of x_t are constants: computed without a graph).

    ``torch.autograd.grad`` rather than ``torch.func.grad`` (``functional``, which is traced): the
    same values in a third of the memory (1 GB against 2.9 GB per 256x256 image for cat2dog's
    DSE), which export's validation runs on. float32 in and out (a reduced-precision DSE computes
    its torso in its dtype, see ``network_fns``); in float16 the similarity is scaled by
    ``scale`` before differentiation and the gradient scaled back."""

    def __init__(self, dse: torch.nn.Module, s1: str, scale: float = 1.0):
        super().__init__()
        self.dse, self.s1, self.scale = dse, s1, scale

    def forward(self, y, x_t, t):
        with torch.no_grad():
            feat_x = self.dse(x_t, t)
        with torch.enable_grad():
            v = y.detach().requires_grad_(True)
            sim = dse_similarity(self.s1, self.dse(v, t), feat_x).sum()
            if self.scale != 1.0:
                sim = self.scale * sim
            (grad,) = torch.autograd.grad(sim, v)
        return grad if self.scale == 1.0 else grad / self.scale

    def functional(self, y, x_t, t):
        """The same gradient by ``torch.func.grad``: composes with functorch transforms (the traced
        form, see ``trace_dse_gradient``)."""
        feat_x = self.dse(x_t, t)

        def similarity(v):
            sim = dse_similarity(self.s1, self.dse(v, t), feat_x).sum()
            return sim if self.scale == 1.0 else self.scale * sim

        grad = torch.func.grad(similarity)(y)
        return grad if self.scale == 1.0 else grad / self.scale


class TracedGradient(torch.nn.Module):
    """A traced graph as a plain module (the ONNX exporter takes modules)."""

    def __init__(self, graph_module: torch.fx.GraphModule):
        super().__init__()
        self.graph_module = graph_module

    def forward(self, y, x_t, t):
        return self.graph_module(y, x_t, t)


def trace_dse_gradient(dse: torch.nn.Module, s1: str, sample_inputs, scale: float = 1.0, *,
                       extra_decompositions: dict | None = None, functional: bool = False) -> TracedGradient:
    """Trace ``DSEGradient(dse, s1, scale)`` into a forward-only graph with a symbolic batch
    (``batch_tracing``). ``extra_decompositions``: applied besides the gradient's own;
    ``functional``: no in-place ops in the graph."""
    eager = DSEGradient(dse.eval(), s1, scale)
    table = {**(extra_decompositions or {}), **gradient_decompositions()}
    graph = trace_batched(eager.functional, sample_inputs, decompositions=table, functional=functional)
    leftovers = sorted({str(n.target) for n in graph.graph.nodes
                        if n.op == "call_function" and "backward" in str(n.target)})
    if leftovers:
        raise EgsdeError(f"backward ops left in the DSE gradient graph: {leftovers}")
    return TracedGradient(graph)
