"""The LibraGrad rules as code (docs/METHOD.md section 2).

Two forms, both keeping the forward value bit for bit:

* Fused kernels (GELU, SiLU, hard-swish, Mish, LayerNorm, RMSNorm, GroupNorm) become custom ops
  ``torch.ops.libragrad.*``: the forward calls the very kernel the model called, the registered
  backward is the rule. They survive ``torch.export`` (load them back after ``import
  libragrad_fx``) and ``torch.compile`` (no graph break).
* Decomposed spellings get ``detach`` on the edge where a gate enters a product, and rule ops
  that keep a value but change its gradient: ``scale_grad`` balances a product of k streams,
  ``identity_rule`` makes any elementwise op complete, ``straight_through`` carries a surrogate's
  gradient (train-mode BatchNorm, InstanceNorm, unrolled LSTMs). All of them are custom ops too,
  so an exported program keeps each rule as one readable node. ``detach`` survives
  ``torch.export``'s default (training) IR but not ``run_decompositions()``, which turns it into
  ``alias``: never decompose an exported LibraGrad program.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode as _get_dispatch_mode
from torch.utils.weak import WeakIdKeyDictionary

from . import kernels
from .wanted import record_inputs, wanted

__all__ = ["scale_grad", "factor_grad", "identity_rule", "straight_through", "normalize", "glu", "batch_norm_train",
           "instance_norm", "lerp", "gelu", "silu", "hardswish", "mish", "layer_norm", "rms_norm", "group_norm",
           "GRAPH_FUNCTIONS", "WRAPPED_ARG"]

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# --- rules that change a value's gradient, as custom ops -----------------------------------------
# Each is one node under torch.export (a Python function would be traced into its parts, and a
# graph reader could no longer tell a rule from the model). Their forward returns a copy: a
# custom op may not return an alias of its input.

def _fake_like_first(x: Tensor, *args) -> Tensor:
    return torch.empty_like(x)


def _gradient_scaler(name: str):
    """A custom op ``libragrad::<name>(x, scale)``: ``x`` in the forward (a copy: a custom op may not return
    an alias of its input), ``scale * grad`` in the backward."""
    @torch.library.custom_op(f"libragrad::{name}", mutates_args=())
    def op(x: Tensor, scale: float) -> Tensor:
        return x.clone()

    op.register_fake(_fake_like_first)
    op.register_autograd(lambda ctx, grad: (grad * ctx.scale, None),
                         setup_context=lambda ctx, inputs, output: setattr(ctx, "scale", inputs[1]))
    return getattr(torch.ops.libragrad, name).default


scale_grad = _gradient_scaler("scale_grad")
"""x in the forward (exactly); ``scale * grad`` in the backward.

A product of k stream factors is homogeneous of degree k, so each factor's share of the output
is 1/k of its linearisation: scaling the product's output gradient by 1/k does it."""


def _identity_gate(x: Tensor, y: Tensor, f0: float, slope0: float) -> Tensor:
    tiny = torch.finfo(x.dtype).eps
    gate = torch.sub(y, f0).div_(x)  # inf or nan where x ~ 0: replaced below
    return gate.masked_fill_(x.abs() <= tiny, slope0)


@torch.library.custom_op("libragrad::identity_rule", mutates_args=())
def _identity_rule(x: Tensor, y: Tensor, f0: float, slope0: float) -> Tensor:
    return y.clone()


def _identity_rule_setup(ctx, inputs, output):
    x, y, f0, slope0 = inputs
    record_inputs(ctx, inputs)
    # the gate is all the backward reads: one tensor kept instead of x and y (and y's history)
    ctx.save_for_backward(_identity_gate(x, y, f0, slope0) if ctx.needs_input_grad[0] else None)


def _identity_rule_backward(ctx, grad):
    (gate,) = ctx.saved_tensors
    return (grad * gate if gate is not None and wanted(ctx)[0] else None), None, None, None


_identity_rule.register_fake(lambda x, y, f0, slope0: torch.empty_like(y))
_identity_rule.register_autograd(_identity_rule_backward, setup_context=_identity_rule_setup)
identity_rule = torch.ops.libragrad.identity_rule.default
"""``y = f(x)`` in the forward; ``grad * g`` in the backward with g = (f(x) - f(0)) / x, guarded near
0 by f'(0): any elementwise f written as x * g(x).detach() + f(0); f(0) is the op's bias."""


@torch.library.custom_op("libragrad::straight_through", mutates_args=())
def _straight_through(y: Tensor, surrogate: Tensor) -> Tensor:
    return y.clone()


_straight_through.register_fake(lambda y, surrogate: torch.empty_like(y))
_straight_through.register_autograd(lambda ctx, grad: (None, grad), setup_context=lambda ctx, inputs, output: None)
straight_through = torch.ops.libragrad.straight_through.default
"""``y`` in the forward, the gradient of ``surrogate`` in the backward (rare fused ops: the surrogate
spells out the rule with detached statistics)."""


@torch.library.custom_op("libragrad::normalize", mutates_args=())
def _normalize(x: Tensor, p: float, dim: int, eps: float) -> Tensor:
    return F.normalize(x, p, dim, eps)


def _normalize_setup(ctx, inputs, output):
    x, p, dim, eps = inputs
    # the detached norm is all the backward reads: a per-row value instead of x
    ctx.save_for_backward(x.norm(p, dim, keepdim=True).clamp_min(eps) if ctx.needs_input_grad[0] else None)


def _normalize_backward(ctx, grad):
    (norm,) = ctx.saved_tensors
    return (grad / norm if norm is not None else None), None, None, None


_normalize.register_fake(_fake_like_first)
_normalize.register_autograd(_normalize_backward, setup_context=_normalize_setup)
normalize = torch.ops.libragrad.normalize.default
"""F.normalize forward (the same function); backward with the norm detached: ``grad / ||x||``."""


@torch.library.custom_op("libragrad::glu", mutates_args=())
def _glu(x: Tensor, dim: int) -> Tensor:
    return F.glu(x, dim)


def _glu_setup(ctx, inputs, output):
    x, dim = inputs
    ctx.dim = dim
    # the gate sigmoid(b) is all the backward reads: half of x
    ctx.save_for_backward(torch.sigmoid(x.chunk(2, dim)[1]) if ctx.needs_input_grad[0] else None)


def _glu_backward(ctx, grad):
    (gate,) = ctx.saved_tensors
    if gate is None:
        return None, None
    return torch.cat([grad * gate, torch.zeros_like(gate)], ctx.dim), None


_glu.register_fake(lambda x, dim: x.chunk(2, dim)[0].new_empty(x.chunk(2, dim)[0].shape))
_glu.register_autograd(_glu_backward, setup_context=_glu_setup)
glu = torch.ops.libragrad.glu.default
"""F.glu(x) = a * sigmoid(b): the sigmoid is a gate, so the backward is ``grad * sigmoid(b)`` to a only."""


def batch_norm_train(x: Tensor, y: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """Train-mode BatchNorm: batch statistics detached, the mean subtraction kept (it is linear)."""
    dims = [d for d in range(x.dim()) if d != 1]
    centred = x - x.mean(dims, keepdim=True)
    scale = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps).detach()
    shape = [1, -1] + [1] * (x.dim() - 2)
    surrogate = centred * scale * (weight.view(shape) if weight is not None else 1.0)
    return straight_through(y, surrogate)


def instance_norm(x: Tensor, y: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """InstanceNorm: per-sample, per-channel statistics detached."""
    dims = list(range(2, x.dim()))
    centred = x - x.mean(dims, keepdim=True)
    scale = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps).detach()
    shape = [1, -1] + [1] * (x.dim() - 2)
    surrogate = centred * scale * (weight.view(shape) if weight is not None else 1.0)
    return straight_through(y, surrogate)


# --- fused kernels as custom ops -------------------------------------------------------------

def _half_product(grad: Tensor, gate: Tensor) -> Tensor:
    """``grad * gate / 2`` written into ``gate`` (one pass: the 1/2 rides on addcmul's scalar)."""
    return torch.addcmul(gate.new_zeros(()), grad, gate, value=0.5, out=gate)


def _eager(*tensors: Tensor) -> bool:
    """Whether a backward runs on real data: not itself differentiated (create_graph needs the torch
    expression's graph), and not traced (torch.compile's and export's backward runs on fake or
    functional tensors, under a dispatch mode: a C++ kernel cannot read them, nor may a cached buffer
    enter the trace)."""
    return (not torch.is_grad_enabled() and all(type(t) is Tensor for t in tensors)
            and _get_dispatch_mode() is None)


def _fused(*tensors: Tensor):
    """The fused kernels when they are on and apply: float32/float64 CPU tensors in an eager backward."""
    module = kernels.module()
    if module is None or not all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
                                 for t in tensors) or not _eager(*tensors):
        return None
    return module


def _gelu_backward(grad: Tensor, x: Tensor, approximate: str) -> Tensor:
    """``grad * Phi(x)``, three passes over x: Phi(x) = erfc(-x / sqrt 2) / 2 in place, then the product
    (one pass with the fused kernels).

    tanh approximation: Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2."""
    if torch.is_grad_enabled():  # the backward is differentiated (create_graph): no in-place or out= ops
        if approximate == "tanh":
            return grad * (1 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))) / 2
        return grad * torch.erfc(x * -_SQRT_HALF) / 2
    fused = _fused(grad, x) if approximate == "none" and grad.dtype == x.dtype else None
    if fused is not None:
        return fused.gelu_gate_backward(grad, x)
    if approximate == "tanh":
        inner = torch.mul(x, x).mul_(0.044715 * _SQRT_2_OVER_PI).add_(_SQRT_2_OVER_PI).mul_(x)
        return _half_product(grad, inner.tanh_().add_(1.0))
    return _half_product(grad, torch.mul(x, -_SQRT_HALF).erfc_())


def _silu_backward(grad: Tensor, x: Tensor) -> Tensor:
    """``grad * sigmoid(x)`` in one fused pass: softplus' derivative is the sigmoid.

    softplus_backward returns ``grad`` itself above its threshold; at 2 - log(eps) the sigmoid
    already rounds to 1 in the dtype and exp(x) is still finite."""
    threshold = 2.0 - math.log(torch.finfo(x.dtype).eps)
    return torch.ops.aten.softplus_backward(grad, x, 1.0, threshold)


@torch.library.custom_op("libragrad::gelu", mutates_args=())
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU forward; backward ``grad * Phi(x)`` (gate pruning: GELU = x * Phi(x).detach())."""
    return F.gelu(x, approximate=approximate)


@torch.library.custom_op("libragrad::silu", mutates_args=())
def silu(x: Tensor) -> Tensor:
    """SiLU forward; backward ``grad * sigmoid(x)``."""
    return F.silu(x)


@torch.library.custom_op("libragrad::hardswish", mutates_args=())
def hardswish(x: Tensor) -> Tensor:
    """Hard-swish forward; backward ``grad * relu6(x + 3) / 6``."""
    return F.hardswish(x)


@torch.library.custom_op("libragrad::mish", mutates_args=())
def mish(x: Tensor) -> Tensor:
    """Mish forward; backward ``grad * tanh(softplus(x))``."""
    return F.mish(x)


# grad * gate(x): the activation's gate detached (docs/METHOD.md section 2, nonlinearity)
_ACTIVATION_BACKWARDS = {
    "gelu": lambda grad, x, args: _gelu_backward(grad, x, args[0] if args else "none"),
    "silu": lambda grad, x, args: _silu_backward(grad, x),
    "hardswish": lambda grad, x, args: F.hardsigmoid(x).mul_(grad),  # relu6(x + 3) / 6
    "mish": lambda grad, x, args: (grad * torch.tanh(F.softplus(x)) if torch.is_grad_enabled()  # create_graph
                                   else F.softplus(x).tanh_().mul_(grad)),
}


def _register_activation(op, name: str) -> None:
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0] if ctx.needs_input_grad[0] else None)
        ctx.extra = tuple(inputs[1:])

    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        dx = _ACTIVATION_BACKWARDS[name](grad, x, ctx.extra) if x is not None else None
        return (dx,) + (None,) * len(ctx.extra)

    op.register_fake(lambda x, *args: torch.empty_like(x))
    op.register_autograd(backward, setup_context=setup_context)


for _op, _name in ((gelu, "gelu"), (silu, "silu"), (hardswish, "hardswish"), (mish, "mish")):
    _register_activation(_op, _name)


@torch.library.custom_op("libragrad::layer_norm", mutates_args=())
def layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor], bias: Optional[Tensor],
               eps: float) -> Tensor:
    """LayerNorm forward; backward with the standard deviation detached (mean subtraction kept)."""
    if torch.is_autocast_enabled(x.device.type):
        return F.layer_norm(x, normalized_shape, weight, bias, eps)  # autocast's cast, then this very kernel
    # F.layer_norm returns native_layer_norm's first output (the same kernel): its statistics are
    # handed to the backward here instead of being recomputed there
    y, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
    _FORWARD_STATISTICS[y] = (mean, rstd)
    return y


@torch.library.custom_op("libragrad::rms_norm", mutates_args=())
def rms_norm(x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor], eps: Optional[float]) -> Tensor:
    """RMSNorm forward; backward with the root mean square detached."""
    return F.rms_norm(x, normalized_shape, weight, eps)


@torch.library.custom_op("libragrad::group_norm", mutates_args=())
def group_norm(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> Tensor:
    """GroupNorm forward; backward with each group's standard deviation detached."""
    return F.group_norm(x, num_groups, weight, bias, eps)


def _reduce_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a broadcast gradient back to the parameter's shape (trailing-dim broadcasting)."""
    lead = grad.dim() - like.dim()
    return grad.sum(dim=tuple(range(lead))) if lead > 0 else grad


def _norm_fake(x, *args):
    return torch.empty_like(x)


_FORWARD_STATISTICS: WeakIdKeyDictionary = WeakIdKeyDictionary()
"""A fused norm's statistics, keyed by its output: a custom op returns one tensor, so the forward
leaves mean and rstd here for setup_context to take (an entry nobody takes dies with its output).
Wherever the forward did not leave them (fake tensors under torch.compile, autocast), setup_context
computes them."""


def _layer_norm_setup(ctx, inputs, output):
    x, shape, weight, bias, eps = inputs
    record_inputs(ctx, inputs)
    stats = _FORWARD_STATISTICS.pop(output, None)
    mean, rstd = stats if stats is not None else torch.native_layer_norm(x, shape, None, None, eps)[1:]
    # dx needs rstd (and the weight) only: x and the mean are kept for a weight gradient alone
    keep = weight is not None and ctx.needs_input_grad[2]
    ctx.save_for_backward(x if keep else None, mean if keep else None, rstd, weight)
    ctx.shape = list(shape)


def _in_dtype(values: list, dtype: torch.dtype) -> list:
    """The saved tensors in the gradient's dtype: the dtype the forward's kernel computed in. Under
    autocast the norms run in float32 on inputs saved in float16 / bfloat16 (and the backward may run
    outside autocast), so the backward casts as the forward did."""
    return [v.to(dtype) if isinstance(v, Tensor) and v.dtype != dtype and v.is_floating_point() else v
            for v in values]


_ZEROS: dict = {}
"""One flat zero tensor per (device, dtype), grown to the largest LayerNorm input its backward has
seen: the zero-centred backward reads it as its input and mean. A fresh zero tensor per call would
cost a page-faulting fill as large as the kernel's own work."""
_ZERO_VIEWS: dict = {}
"""(input, mean) views of that buffer per (device, dtype, input shape, statistics shape): a model runs
the same few shapes, and slicing and viewing anew costs as much as a small LayerNorm."""


def _zero_centred_ready(grad: Tensor, rstd: Tensor, weight: Optional[Tensor]) -> bool:
    """Whether the zero-centred ATen backward applies: an eager backward on float32 / float64 tensors
    of one dtype (the kernel's statistics are in the input's dtype there)."""
    if grad.dtype not in (torch.float32, torch.float64) or rstd.dtype != grad.dtype:
        return False
    return (weight is None or weight.dtype == grad.dtype) and _eager(grad, rstd)


def _zeros_for(grad: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    """Zero tensors shaped like ``grad`` and like ``rstd``, views of the shared zero buffer."""
    key = (grad.device, grad.dtype, grad.shape, rstd.shape)
    views = _ZERO_VIEWS.get(key)
    if views is None:
        zeros = _ZEROS.get(key[:2])
        if zeros is None or zeros.numel() < grad.numel():
            zeros = _ZEROS[key[:2]] = torch.zeros(grad.numel(), dtype=grad.dtype, device=grad.device)
            for stale in list(_ZERO_VIEWS):  # views of the smaller buffer (a copy: device threads share it)
                if stale[:2] == key[:2]:
                    _ZERO_VIEWS.pop(stale, None)
        if len(_ZERO_VIEWS) >= 256:  # shapes that vary call by call (text of any length): start afresh
            _ZERO_VIEWS.clear()
        views = _ZERO_VIEWS[key] = (zeros[:grad.numel()].view(grad.shape), zeros[:rstd.numel()].view(rstd.shape))
    return views


def _layer_norm_backward(ctx, grad):
    """dx = rstd * (g - mean(g)), g = grad * w; the weight's and bias's gradients when asked."""
    x, mean, rstd, weight = _in_dtype(list(ctx.saved_tensors), grad.dtype)
    shape = ctx.shape
    want = wanted(ctx)
    dx = dw = db = None
    fused = _fused(grad, rstd)
    if fused is not None:  # dx, dw and db from one sweep over grad
        n = math.prod(shape)
        want_dw = weight is not None and want[2]
        dx, dw, db = fused.layer_norm_rule_backward(
            grad.reshape(-1, n), x if want_dw else None, mean if want_dw else None, rstd.reshape(-1),
            None if weight is None else weight.reshape(-1), bool(want[0]), want_dw, bool(want[3]))
        return (None if dx is None else dx.view(grad.shape), None, None if dw is None else dw.view(weight.shape),
                None if db is None else db.view(shape), None)
    if want[0] and _zero_centred_ready(grad, rstd, weight):
        # ATen's own fused backward at x_hat = 0 (input and mean zero): its projection term,
        # x_hat * mean(g * x_hat), vanishes and what is left is the rule, in one kernel
        zero_input, zero_mean = _zeros_for(grad, rstd)
        dx = torch.ops.aten.native_layer_norm_backward(grad, zero_input, shape, zero_mean, rstd, weight, None,
                                                       [True, False, False])[0]
    elif want[0]:
        rows = grad.shape[:grad.dim() - len(shape)]
        g = grad.reshape(*rows, -1)
        if weight is not None:  # mean(grad * w) as a matrix-vector product: one read of grad
            w = weight.reshape(-1)
            dx = torch.addcmul(torch.matmul(g, w).unsqueeze_(-1).div_(-w.numel()), g, w)
        else:
            dx = g - g.mean(-1, keepdim=True)
        dx = dx.mul_(rstd.reshape(*rows, 1)).view(grad.shape)
    if weight is not None and want[2]:  # x_hat with the statistic detached is x_hat itself: the kernel's dw
        # and db from the same pass over grad when it is wanted too (the kernel reads the bias argument
        # for db's shape and dtype only: the weight's are the same)
        _, dw, db = torch.ops.aten.native_layer_norm_backward(grad, x, shape, mean, rstd, weight,
                                                              weight if want[3] else None,
                                                              [False, True, bool(want[3])])
    elif want[3]:
        db = grad.sum(tuple(range(grad.dim() - len(shape))))
    return dx, None, dw, db, None


def _rms_norm_setup(ctx, inputs, output):
    x, shape, weight, eps = inputs
    record_inputs(ctx, inputs)
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    wide = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
    norm = torch.linalg.vector_norm(x, 2, dims, keepdim=True, dtype=wide)
    count = math.prod(x.shape[d] for d in dims)
    rrms = norm.square_().div_(count).add_(eps).rsqrt_().to(x.dtype)
    keep = weight is not None and ctx.needs_input_grad[2]
    ctx.save_for_backward(x if keep else None, rrms, weight)


def _rms_norm_backward(ctx, grad):
    """dx = grad * w * rrms; dw = sum(grad * x * rrms) when asked."""
    x, rrms, weight = _in_dtype(list(ctx.saved_tensors), grad.dtype)
    want = wanted(ctx)
    dx = dw = None
    if want[0]:
        dx = torch.mul(grad, rrms)
        if weight is not None:
            dx = dx.mul_(weight)
    if weight is not None and want[2]:
        dw = _reduce_to(grad * x * rrms, weight)
    return dx, None, dw, None


def _group_norm_setup(ctx, inputs, output):
    x, groups, weight, bias, eps = inputs
    record_inputs(ctx, inputs)
    n, c = x.shape[0], x.shape[1]
    _, mean, rstd = torch.native_group_norm(x.contiguous(), None, None, n, c, x[0, 0].numel(), groups, eps)
    keep = weight is not None and ctx.needs_input_grad[2]
    ctx.save_for_backward(x if keep else None, mean if keep else None, rstd, weight)
    ctx.groups, ctx.x_shape = groups, x.shape


def _group_norm_backward(ctx, grad):
    """dx = rstd * (g - mean_group(g)), g = grad * w; dw, db when asked."""
    x, mean, rstd, weight = _in_dtype(list(ctx.saved_tensors), grad.dtype)
    want = wanted(ctx)
    groups, shape = ctx.groups, ctx.x_shape
    n, c = shape[0], shape[1]
    affine = [1, c] + [1] * (len(shape) - 2)
    channels = [d for d in range(len(shape)) if d != 1]
    dx = dw = db = None
    if want[0]:
        g = (grad * weight.view(affine) if weight is not None else grad).reshape(n, groups, -1)
        dx = (g - g.mean(-1, keepdim=True)).mul_(rstd.view(n, groups, 1)).reshape(shape)
    if weight is not None and want[2]:
        xhat = (x.reshape(n, groups, -1) - mean.view(n, groups, 1)).mul_(rstd.view(n, groups, 1))
        dw = (grad * xhat.reshape(shape)).sum(channels)
    if want[3]:
        db = grad.sum(channels)
    return dx, None, dw, db, None


for _op, _setup, _backward in ((layer_norm, _layer_norm_setup, _layer_norm_backward),
                               (rms_norm, _rms_norm_setup, _rms_norm_backward),
                               (group_norm, _group_norm_setup, _group_norm_backward)):
    _op.register_fake(_norm_fake)
    _op.register_autograd(_backward, setup_context=_setup)

# --- fused arithmetic -------------------------------------------------------------------------

factor_grad = _gradient_scaler("factor_grad")
"""x in the forward (exactly); ``scale * grad`` in the backward, on one factor argument of one op.

Fused arithmetic such as ``addcmul(x, a, b) = x + v a b`` is a product only in its product term:
scaling the gradient of each of the k stream factors a, b by 1/k balances that term and leaves the
additive argument's gradient alone (scaling the output, as :func:`scale_grad` does for a plain
product, would halve x's too). It belongs to the op that reads it, not to the factor it carries."""


def lerp(y: Tensor, start: Tensor, end: Tensor, weight: Tensor, k_start: float, k_end: float) -> Tensor:
    """``lerp(a, b, w) = a - w a + w b`` with each product's gradient scaled by 1/its degree.

    The weight multiplies both ends, so no factor-wise scaling balances both products at once: the
    gradient comes from the sum written out (the value is the fused kernel's, ``y``)."""
    surrogate = start - scale_grad(weight * start, k_start) + scale_grad(weight * end, k_end)
    return straight_through(y, surrogate)


# The Python rule functions a rewritten graph calls: kept as single calls when it is traced again.
GRAPH_FUNCTIONS = (batch_norm_train, instance_norm, lerp)

WRAPPED_ARG = {scale_grad: 0, identity_rule: 1, straight_through: 0, batch_norm_train: 1, instance_norm: 1, lerp: 0}
"""For each rule function that wraps a node (returns that node's value in the forward and a rule's
gradient in the backward): the position of the wrapped value among its arguments. The wrapped node
and its rule are one op for whoever reads a rewritten graph (its bias, its local completeness)."""
