"""approxtrain for PyTorch: layers whose every multiplication goes through a
multiplier plan.

Each product of a layer follows its role of the plan, as in the CLI
(``--multiplier fwd=mbm:7,dx=fp32,dw=mbm:7``): the forward product uses
``fwd``, the input gradient ``dx`` and the weight gradient ``dw``; attention's
``Q·Kᵀ`` and ``A·V`` use ``attn_qk`` and ``attn_av`` for all three of their
products, as the CLI's attention layer does. Operand order is the design's:
activation first in the forward and weight-gradient products, output gradient
first in the input gradient.

    import torch, approxtrain.torch as att
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    att.convert(model, "mbm:7")                       # every Linear and Conv2d
    att.convert(model, "mbm:7", plan_file="plan.toml")  # per-layer overrides

Tensors are float32 on the CPU; they reach the engine as NumPy views without a
copy (the convolutions copy non-contiguous tensors to C order first). Biases
are added by PyTorch in float32, outside the products.
"""

import torch
from torch import nn

from . import _native

__all__ = [
    "ApproxConv2d",
    "ApproxLinear",
    "attention",
    "bmm",
    "conv2d",
    "convert",
    "linear",
    "matmul",
    "set_threads",
]

_threads = None


def set_threads(n):
    """Worker threads of the engine for every product of this module, as the
    CLI's ``--threads`` (``None``: one per core)."""
    global _threads
    _threads = n


def _plan(plan):
    if isinstance(plan, _native.Plan):
        return plan
    if isinstance(plan, str):
        return _native.Plan(plan)
    raise TypeError(f"plan: expected a Plan or a plan string such as \"mbm:7\", got {type(plan).__name__}")


def _mult(mult):
    if isinstance(mult, _native.Multiplier):
        return mult
    return _native.Multiplier(mult)


def _array(t, name):
    """The NumPy view of a CPU float32 tensor (no copy)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{name}: a {t.device.type} tensor; approxtrain.torch runs its products on the CPU "
            "engine in this version, move the model and data there with .cpu()"
        )
    if t.dtype != torch.float32:
        raise TypeError(f"{name}: expected float32, got {t.dtype}; convert with .float()")
    return t.detach().numpy()


def _tensor(a):
    return torch.from_numpy(a)


class _Product(torch.autograd.Function):
    """``C = A·B`` for matrices (2-D, ``_native.matmul``) or stacks of them
    (3-D, ``_native.bmm``), with forward, input and weight gradients through
    three multipliers: ``dA = dC·Bᵀ`` (dC first), ``dB = Aᵀ·dC`` (A first).
    Transposes are NumPy views, not copies."""

    @staticmethod
    def forward(ctx, a, b, fwd, dx, dw):
        ctx.save_for_backward(a, b)
        ctx.mults = (dx, dw)
        ctx.product = _native.matmul if a.dim() == 2 else _native.bmm
        return _tensor(ctx.product(_array(a, "a"), _array(b, "b"), fwd, threads=_threads))

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        dx, dw = ctx.mults
        dc = _array(dc.contiguous(), "grad")
        da = db = None
        if ctx.needs_input_grad[0]:
            da = _tensor(ctx.product(dc, _array(b, "b").swapaxes(-1, -2), dx, threads=_threads))
        if ctx.needs_input_grad[1]:
            db = _tensor(ctx.product(_array(a, "a").swapaxes(-1, -2), dc, dw, threads=_threads))
        return da, db, None, None, None


def matmul(a, b, plan):
    """``a @ b`` for 2-D tensors, with autograd: the product through
    ``plan.fwd``, ``da`` through ``plan.dx`` and ``db`` through ``plan.dw``
    (``a`` plays the activation, ``b`` the weight). ``plan`` is a Plan, a plan
    string or a single spec for all three."""
    p = _plan(plan)
    return _Product.apply(a, b, p.fwd, p.dx, p.dw)


def linear(x, weight, bias, plan):
    """``x @ weight.T + bias`` over the last axis of ``x`` (``nn.Linear``), each
    product through its role of ``plan``."""
    lead = x.shape[:-1]
    y = matmul(x.reshape(-1, x.shape[-1]), weight.t(), plan)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, weight.shape[0])


def bmm(a, b, mult):
    """Batched ``a @ b`` over ``(..., m, k)`` and ``(..., k, n)`` tensors with the
    same leading shape, with autograd; every product (forward and both
    gradients) through ``mult``."""
    if a.dim() < 3 or a.shape[:-2] != b.shape[:-2]:
        raise ValueError(
            f"bmm: expected (..., m, k) and (..., k, n) with the same leading axes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    lead, m = a.shape[:-2], _mult(mult)
    c = _Product.apply(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), m, m, m)
    return c.reshape(*lead, a.shape[-2], b.shape[-1])


def attention(q, k, v, plan, mask=None, scale=None):
    """Scaled dot-product attention ``softmax(Q·Kᵀ·scale + mask)·V`` over
    ``(..., T, d)`` tensors: ``Q·Kᵀ`` through ``plan.attn_qk`` and ``A·V``
    through ``plan.attn_av`` (forward and gradients), the softmax in PyTorch.
    ``mask`` is added to the scores (``-inf`` hides a position); ``scale``
    defaults to ``1/sqrt(d)``."""
    p = _plan(plan)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = bmm(q, k.transpose(-2, -1), p.attn_qk) * scale
    if mask is not None:
        scores = scores + mask
    return bmm(torch.softmax(scores, dim=-1), v, p.attn_av)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, plan, geometry):
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.plan, ctx.geometry = plan, geometry
        return _tensor(
            _native.conv2d(_array(x, "x"), _array(w, "w"), plan.fwd, threads=_threads, **geometry)
        )

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy = _array(dy.contiguous(), "grad")
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _native.conv2d_grad_input(
                dy, _array(w, "w"), ctx.plan.dx, tuple(x.shape), threads=_threads, **ctx.geometry
            )
            dx = _tensor(dx)
        if ctx.needs_input_grad[1]:
            dw = _native.conv2d_grad_weight(
                _array(x, "x"), dy, ctx.plan.dw, tuple(w.shape), threads=_threads, **ctx.geometry
            )
            dw = _tensor(dw)
        return dx, dw, None, None


def conv2d(x, weight, bias, plan, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` with the forward product through
    ``plan.fwd``, the input gradient through ``plan.dx`` and the weight
    gradient through ``plan.dw``. ``padding`` is an int, a pair or
    ``"valid"``/``"same"`` (zero padding)."""
    if isinstance(padding, str):
        padding = _string_padding(padding, weight.shape[-2:], _pair(dilation))
    geometry = dict(stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), groups=groups)
    y = _Conv2d.apply(x, weight, _plan(plan), geometry)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _string_padding(padding, kernel, dilation):
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in total):
            raise ValueError(
                f"padding='same' with kernel {tuple(kernel)} and dilation {dilation} pads unevenly; "
                "the engine pads both sides alike, give an explicit padding"
            )
        return tuple(t // 2 for t in total)
    raise ValueError(f"padding='{padding}': expected an int, a pair, 'valid' or 'same'")


class ApproxLinear(nn.Linear):
    """``nn.Linear`` whose products follow ``plan`` (the same parameters,
    initialisation and state dict keys)."""

    def __init__(self, in_features, out_features, bias=True, plan="fp32", device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.plan = _plan(plan)

    def forward(self, x):
        return linear(x, self.weight, self.bias, self.plan)

    def extra_repr(self):
        return f"{super().extra_repr()}, plan={self.plan}"


class ApproxConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride, padding, dilation, groups; zero padding) whose
    products follow ``plan``."""

    def __init__(self, *args, plan="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(
                f"ApproxConv2d: padding_mode='{self.padding_mode}' is not supported (only 'zeros')"
            )
        self.plan = _plan(plan)

    def forward(self, x):
        return conv2d(
            x, self.weight, self.bias, self.plan, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self):
        return f"{super().extra_repr()}, plan={self.plan}"


def _approx_like(module, plan):
    """An Approx layer holding the very Parameters of ``module`` (so that an
    optimizer built before the conversion still updates them)."""
    if isinstance(module, nn.Linear):
        new = ApproxLinear.__new__(ApproxLinear)
    else:
        if module.padding_mode != "zeros":
            raise ValueError(
                f"convert: a Conv2d with padding_mode='{module.padding_mode}' cannot be converted (only 'zeros')"
            )
        new = ApproxConv2d.__new__(ApproxConv2d)
    new.__dict__.update(module.__dict__)
    new.plan = _plan(plan)
    return new


def convert(model, plan="fp32", plan_file=None):
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` (in place) by
    an Approx layer whose products follow ``plan`` (a Plan or a plan string,
    e.g. ``"mbm:7"`` or ``"fwd=mbm:7,dx=fp32,dw=mbm:7"``). ``plan_file`` is a
    TOML plan file as the CLI's ``--plan`` reads it; its ``[layers.NAME]``
    tables override the plan of the module named ``NAME`` in
    ``model.named_modules()`` (e.g. ``features.0.0``). Returns ``model``."""
    default = _plan(plan)
    overrides = {}
    if plan_file is not None:
        default, overrides = _native.load_plan_file(str(plan_file), str(default))
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if type(m) in (nn.Linear, nn.Conv2d, ApproxLinear, ApproxConv2d)
    ]
    names = {name for name, _ in targets}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"plan file {plan_file}: no Linear or Conv2d layer named {', '.join(unknown)}; "
            f"the layers are: {', '.join(sorted(names))}"
        )
    for name, m in targets:
        new = _approx_like(m, overrides.get(name, default))
        if name == "":
            raise ValueError("convert: the model itself is a single layer; wrap it in nn.Sequential")
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new)
    return model
