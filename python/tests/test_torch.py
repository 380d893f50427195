"""approxtrain.torch: each product of a layer through its role of the plan,
bit-exact with the NumPy-level engine on the same operands; with fp32 the
layers agree with PyTorch's own; convert() swaps every Linear and Conv2d of a
model with per-layer overrides from a plan file."""

import numpy as np
import pytest

import approxtrain as at
from conftest import random_f32, require

torch = require("torch")
att = __import__("approxtrain.torch", fromlist=["convert"])
nn = torch.nn


def bits(t):
    return t.detach().contiguous().numpy().view(np.uint32)


def same_bits(t, a):
    return t.shape == a.shape and np.array_equal(bits(t), a.view(np.uint32))


def test_linear_products_follow_their_roles_bit_exactly(rng):
    plan = at.Plan("fwd=mbm:7,dx=mitchell:7,dw=drum:6")
    layer = att.ApproxLinear(37, 11, plan=plan)
    x = torch.from_numpy(random_f32(rng, (5, 37))).requires_grad_()
    y = layer(x)
    dy = random_f32(rng, (5, 11))
    y.backward(torch.from_numpy(dy))
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    fwd = at.matmul(x.detach().numpy(), np.ascontiguousarray(w.T), "mbm:7", reference=True)
    assert same_bits(y, (fwd + b).astype(np.float32))
    assert same_bits(x.grad, at.matmul(dy, w, "mitchell:7", reference=True))
    dwt = at.matmul(np.ascontiguousarray(x.detach().numpy().T), dy, "drum:6", reference=True)
    assert same_bits(layer.weight.grad, np.ascontiguousarray(dwt.T))
    torch.testing.assert_close(layer.bias.grad, torch.from_numpy(dy).sum(0))


@pytest.mark.parametrize(
    "kw",
    [
        dict(stride=1, padding=1),
        dict(stride=2, padding=(1, 2), dilation=(1, 2)),
        dict(stride=1, padding="same", groups=2),
        dict(stride=2, padding=1, groups=4),
    ],
)
def test_conv2d_products_follow_their_roles_bit_exactly(rng, kw):
    plan = at.Plan("fwd=mbm:7,dx=mitchell:7,dw=mbm:5")
    conv = att.ApproxConv2d(4, 8, 3, plan=plan, bias=False, **kw)
    x = torch.from_numpy(random_f32(rng, (2, 4, 9, 10))).requires_grad_()
    y = conv(x)
    dy = random_f32(rng, tuple(y.shape))
    y.backward(torch.from_numpy(dy))
    padding = (1, 1) if conv.padding == "same" else conv.padding
    geo = dict(stride=conv.stride, padding=padding, dilation=conv.dilation, groups=conv.groups)
    xn, wn = x.detach().numpy(), conv.weight.detach().numpy()
    assert same_bits(y, at.conv2d(xn, wn, "mbm:7", reference=True, **geo))
    assert same_bits(x.grad, at.conv2d_grad_input(dy, wn, "mitchell:7", xn.shape, reference=True, **geo))
    assert same_bits(conv.weight.grad, at.conv2d_grad_weight(xn, dy, "mbm:5", wn.shape, reference=True, **geo))


def test_fp32_layers_agree_with_pytorch_forward_and_backward(rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    for ref in [nn.Linear(20, 7), nn.Conv2d(6, 9, 3, stride=2, padding=1, dilation=2, groups=3)]:
        approx = att.convert(nn.Sequential(ref), "fp32")[0]
        assert type(approx) in (att.ApproxLinear, att.ApproxConv2d)
        native = ref  # convert() left it as it was, sharing its Parameters
        shape = (4, 20) if isinstance(ref, nn.Linear) else (2, 6, 11, 11)
        x1 = torch.from_numpy(random_f32(rng, shape)).requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        y1 = approx(x1)
        y2 = native(x2)
        torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
        g = torch.from_numpy(random_f32(rng, tuple(y1.shape)))
        (w1,) = torch.autograd.grad(y1, [x1], g)
        (w2,) = torch.autograd.grad(y2, [x2], g)
        torch.testing.assert_close(w1, w2, rtol=1e-5, atol=1e-5)
        dw1 = torch.autograd.grad(approx(x1), [approx.weight], g)[0]
        dw2 = torch.autograd.grad(native(x2), [native.weight], g)[0]
        torch.testing.assert_close(dw1, dw2, rtol=1e-4, atol=1e-4)


def test_bmm_and_attention_go_through_the_attention_roles(rng):
    plan = at.Plan("fwd=fp32,attn_qk=mbm:7,attn_av=mitchell:7")
    q, k, v = (torch.from_numpy(random_f32(rng, (2, 3, 6, 8))).requires_grad_() for _ in range(3))
    out = att.attention(q, k, v, plan)
    qn, kn, vn = (t.detach().numpy().reshape(6, 6, 8) for t in (q, k, v))
    s = torch.from_numpy(at.bmm(qn, kn.transpose(0, 2, 1), "mbm:7", reference=True)) * 8**-0.5
    p = torch.softmax(s, dim=-1).numpy()
    want = at.bmm(p, vn, "mitchell:7", reference=True)
    assert same_bits(out, want.reshape(2, 3, 6, 8))
    out.sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None
    # dV = Aᵀ·dY through attn_av, A first.
    dv = at.bmm(np.ascontiguousarray(p.transpose(0, 2, 1)), np.ones((6, 6, 8), np.float32), "mitchell:7")
    assert same_bits(v.grad, dv.reshape(2, 3, 6, 8))


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_convert_replaces_every_layer_in_place_with_per_layer_overrides(tmp_path):
    model = Small()
    params = list(model.parameters())
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[layers."features.0"]\nmultiplier = "fp32"\n[layers."head.1"]\ndx = "mitchell:7"\n')
    att.convert(model, "mbm:7", plan_file=plan_file)
    assert list(model.parameters()) == params  # the very same Parameters
    layers = dict(model.named_modules())
    assert isinstance(layers["features.0"], att.ApproxConv2d)
    assert isinstance(layers["features.2"], att.ApproxConv2d)
    assert isinstance(layers["head.1"], att.ApproxLinear)
    assert str(layers["features.0"].plan) == "fp32"
    assert layers["features.2"].plan.fwd.spec == "mbm:7"
    assert (layers["head.1"].plan.fwd.spec, layers["head.1"].plan.dx.spec) == ("mbm:7", "mitchell:7")
    y = model(torch.ones(2, 1, 6, 6))
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())

    bad = tmp_path / "bad.toml"
    bad.write_text('[layers.conv9]\nmultiplier = "fp32"\n')
    with pytest.raises(ValueError, match="no Linear or Conv2d layer named conv9; the layers are: features.0"):
        att.convert(Small(), "mbm:7", plan_file=bad)


def test_bad_tensors_are_one_line_python_exceptions(rng):
    a = torch.ones(4, 6)
    b = torch.ones(6, 3)
    cases = [
        (lambda: att.matmul(a.double(), b, "fp32"), TypeError, "float32"),
        (lambda: att.matmul(a[:, ::2], b[:3], "fp32"), ValueError, "ascontiguousarray"),
        (lambda: att.matmul(a, a, "fp32"), ValueError, "cannot multiply"),
        (lambda: att.matmul(a.to("meta"), b, "fp32"), ValueError, ".cpu()"),
        (lambda: att.ApproxLinear(6, 3, plan="nosuch:7"), ValueError, "known models"),
        (lambda: att.ApproxConv2d(2, 2, 2, padding="same", plan="fp32")(torch.ones(1, 2, 4, 4)), ValueError, "unevenly"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind) as e:
            call()
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
