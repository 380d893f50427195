"""The NumPy-level API: every product bit-exact with the engine's scalar
reference and with an independent NumPy model of the arithmetic, tables and
models by name and from files, and bad input as one-line Python exceptions."""

import threading
import time

import numpy as np
import pytest

import approxtrain as at
from conftest import random_f32


def same_bits(x, y):
    return x.shape == y.shape and np.array_equal(x.view(np.uint32), y.view(np.uint32))


def amsim_mul_numpy(a, b, table, bits):
    """DESIGN.md's AMSim product of float32 arrays (broadcasting), written
    from the specification: specials, zero/subnormal operands, the table on
    the top `bits` fraction bits, the exponent sum, overflow to infinity and
    underflow to zero."""
    a, b = np.broadcast_arrays(a.astype(np.float32), b.astype(np.float32))
    ua, ub = a.view(np.uint32).astype(np.int64), b.view(np.uint32).astype(np.int64)
    ea, eb = (ua >> 23) & 0xFF, (ub >> 23) & 0xFF
    sign = ((ua ^ ub) >> 31) & 1
    ta, tb = (ua & 0x7FFFFF) >> (23 - bits), (ub & 0x7FFFFF) >> (23 - bits)
    lut = table[ta, tb].astype(np.float64)
    mag = lut * np.exp2((ea + eb - 254).astype(np.float64))
    out = np.where(mag >= 2.0**128, np.inf, mag)
    out = np.where(out < 2.0**-126, 0.0, out).astype(np.float32)
    out = np.where(sign == 1, -out, out)
    zero = (ea == 0) | (eb == 0)
    out = np.where(zero, np.where(sign == 1, np.float32(-0.0), np.float32(0.0)), out)
    special = (ea == 0xFF) | (eb == 0xFF)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(special, a * b, out)
    return out.astype(np.float32)


def matmul_numpy(a, b, lut):
    """Sequential float32 sums from +0.0 (k <= 1024: one accumulation block)."""
    table = lut.table()
    prods = amsim_mul_numpy(a[:, :, None], b[None, :, :], table, lut.bits)
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for p in range(a.shape[1]):
        acc = (acc + prods[:, p, :]).astype(np.float32)
    return acc


def test_models_lists_the_compiled_models_with_their_widths():
    names = {m["name"]: m for m in at.models()}
    for name in ["exact", "bf16trunc", "mitchell", "mbm", "drum", "ilm", "realm", "lmul"]:
        assert name in names
    assert names["mbm"]["min_bits"] <= 7 <= names["mbm"]["max_bits"]


def test_mbm7_spot_checks_of_the_design():
    m = at.Multiplier("mbm:7")
    assert m.spec == "mbm:7"
    assert m.mul(1.0, 1.0) == 1.09375
    assert m.mul(1.5, 1.5) == 2.109375
    assert m.mul(3.0, -7.0) == -20.875


def test_matmul_matches_an_independent_numpy_model_of_the_arithmetic(rng):
    lut = at.Lut.build("mbm", 5)
    for _ in range(5):
        m, k, n = rng.integers(1, 20, size=3)
        a, b = random_f32(rng, (m, k)), random_f32(rng, (k, n))
        a[0, 0] = 0.0
        want = matmul_numpy(a, b, lut)
        assert same_bits(at.matmul(a, b, lut), want)
        assert same_bits(at.matmul(a, b, at.Multiplier(lut)), want)


@pytest.mark.parametrize("spec", ["mbm:7", "mitchell:5", "bf16trunc:7", "drum:6"])
def test_matmul_on_c_and_f_ordered_views_is_bit_exact_with_the_reference(rng, spec):
    for _ in range(4):
        m, k, n = int(rng.integers(1, 70)), int(rng.integers(2, 1500)), int(rng.integers(2, 70))
        a, b = random_f32(rng, (m, k)), random_f32(rng, (k, n))
        want = at.matmul(a, b, spec, reference=True)
        assert same_bits(at.matmul(a, b, spec), want)
        # F-ordered operands (transposes of C arrays): no copy, same bits.
        af, bf = np.asfortranarray(a), b.T.copy().T
        assert not bf.flags.c_contiguous and bf.flags.f_contiguous
        assert same_bits(at.matmul(af, bf, spec), want)
        assert same_bits(at.matmul(a, b, spec, threads=1), want)


def test_bmm_is_bit_exact_with_the_reference_and_with_matmul(rng):
    a, b = random_f32(rng, (6, 9, 40)), random_f32(rng, (6, 40, 11))
    got = at.bmm(a, b, "mbm:7")
    assert same_bits(got, at.bmm(a, b, "mbm:7", reference=True))
    for i in range(6):
        assert same_bits(got[i], at.matmul(a[i], b[i], "mbm:7"))
    # K stored as [batch, n, k] and read transposed (attention's Q·Kᵀ).
    kt = np.ascontiguousarray(b.transpose(0, 2, 1))
    assert same_bits(at.bmm(a, kt.transpose(0, 2, 1), "mbm:7"), got)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups",
    [(1, 0, 1, 1), (2, 1, 1, 1), ((2, 1), (1, 2), (1, 2), 2), (1, 1, 1, 4)],
)
def test_conv_products_are_bit_exact_with_the_reference(rng, stride, padding, dilation, groups):
    x = random_f32(rng, (2, 4, 9, 8))
    w = random_f32(rng, (8, 4 // groups, 3, 3))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = at.conv2d(x, w, "mbm:7", **kw)
    assert same_bits(y, at.conv2d(x, w, "mbm:7", reference=True, **kw))
    dy = random_f32(rng, y.shape)
    dx = at.conv2d_grad_input(dy, w, "mitchell:7", x.shape, **kw)
    assert same_bits(dx, at.conv2d_grad_input(dy, w, "mitchell:7", x.shape, reference=True, **kw))
    dw = at.conv2d_grad_weight(x, dy, "mbm:7", w.shape, **kw)
    assert same_bits(dw, at.conv2d_grad_weight(x, dy, "mbm:7", w.shape, reference=True, **kw))


def test_conv_forward_with_fp32_matches_a_direct_numpy_convolution(rng):
    x, w = random_f32(rng, (1, 2, 5, 5)), random_f32(rng, (3, 2, 3, 3))
    y = at.conv2d(x, w, "fp32", padding=1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros_like(y)
    for i in range(5):
        for j in range(5):
            want[0, :, i, j] = np.tensordot(w, xp[0, :, i : i + 3, j : j + 3], axes=3)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_luts_round_trip_through_native_and_approxtrain_files(tmp_path):
    lut = at.Lut.build("mbm", 7)
    assert (lut.model, lut.bits) == ("mbm", 7)
    lut.save(tmp_path / "mbm7.lut")
    lut.save(tmp_path / "MBM_7.bin", format="approxtrain")
    for path in [tmp_path / "mbm7.lut", tmp_path / "MBM_7.bin"]:
        back = at.Lut.load(path)
        assert back.bits == 7
        assert np.array_equal(back.table(), lut.table())
        m = at.Multiplier(f"lut:{path}")
        assert m.mul(3.0, -7.0) == -20.875
    # ApproxTrain's MBM_3 begins 02 02 04 04 06 06 80 80 (DESIGN.md).
    at.Lut.build("mbm", 3).save(tmp_path / "MBM_3.bin", format="approxtrain")
    assert (tmp_path / "MBM_3.bin").read_bytes()[:8] == bytes([2, 2, 4, 4, 6, 6, 0x80, 0x80])


def test_characterize_gives_the_metrics_of_the_cli():
    c = at.characterize("mbm", bits=7)
    assert c["exhaustive"] and c["pairs"] == 4**7
    assert 0.0 < c["mred"] < 0.1
    assert at.characterize(at.Lut.build("mbm", 7)) == c
    exact = at.characterize("exact", bits=5)
    assert exact["error_rate"] == 0.0 and exact["mred"] == 0.0


def test_plans_take_the_cli_syntax_and_plan_files_override_per_layer(tmp_path):
    p = at.Plan("fwd=mbm:7,dx=fp32,dw=mitchell:7")
    assert (p.fwd.spec, p.dx.spec, p.dw.spec) == ("mbm:7", "fp32", "mitchell:7")
    assert at.Plan("mbm:7").dw.spec == "mbm:7"
    f = tmp_path / "plan.toml"
    f.write_text('multiplier = "mbm:7"\n[layers.conv1]\nmultiplier = "fp32"\n[layers.fc3]\ndx = "fp32"\n')
    default, layers = at.load_plan_file(f)
    assert default.fwd.spec == "mbm:7"
    assert layers["conv1"].fwd.spec == "fp32"
    assert (layers["fc3"].fwd.spec, layers["fc3"].dx.spec) == ("mbm:7", "fp32")


def test_the_gil_is_released_while_the_engine_runs(rng):
    # The main thread counts while a long product runs in another thread.
    # With the GIL held during the product it could count only until the
    # product starts (one switch interval, 5 ms); released, it counts for
    # most of the product's time.
    a, b = random_f32(rng, (256, 256)), random_f32(rng, (256, 256))
    done = threading.Event()

    def count_for(seconds):
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end and not done.is_set():
            n += 1
        return n

    rate = count_for(0.1) / 0.1
    span = {}

    def product():
        span["start"] = time.perf_counter()
        at.matmul(a, b, "direct:mbm:7", threads=1)
        span["end"] = time.perf_counter()
        done.set()

    t = threading.Thread(target=product)
    t.start()
    n = count_for(60.0)
    t.join()
    seconds = span["end"] - span["start"]
    print(f"product {seconds:.3f} s, main thread counted {n} ({n / rate:.3f} s of counting)")
    assert seconds > 0.05, "the product was too quick to tell"
    assert n / rate > 0.2 * seconds


def one_line(exc):
    return "\n" not in str(exc.value) and len(str(exc.value)) > 10


@pytest.mark.parametrize(
    "call,kind,words",
    [
        (lambda a, b: at.matmul(a.astype(np.float64), b, "fp32"), TypeError, "float32"),
        (lambda a, b: at.matmul(a.tolist(), b, "fp32"), TypeError, "numpy.ndarray"),
        (lambda a, b: at.matmul(a, a, "fp32"), ValueError, "cannot multiply"),
        (lambda a, b: at.matmul(a[None], b, "fp32"), ValueError, "2-D"),
        (lambda a, b: at.matmul(np.zeros((8, 10), np.float32)[::2, ::2], b, "fp32"), ValueError, "ascontiguousarray"),
        (lambda a, b: at.matmul(a[::-1], b, "fp32"), ValueError, "negative stride"),
        (lambda a, b: at.matmul(a, b, "nosuchmodel:7"), ValueError, "known models"),
        (lambda a, b: at.matmul(a, b, "mbm:99"), ValueError, "out of range"),
        (lambda a, b: at.matmul(a, b, 7), TypeError, "spec string"),
        (lambda a, b: at.matmul(a, b, "fp32", threads=0), ValueError, "threads=0"),
        (lambda a, b: at.conv2d(np.zeros((1, 2, 5, 5), np.float32), np.zeros((3, 1, 3, 3), np.float32), "fp32"), ValueError, "channels"),
        (lambda a, b: at.conv2d(np.zeros((1, 2, 2, 2), np.float32), np.zeros((3, 2, 3, 3), np.float32), "fp32"), ValueError, "does not fit"),
        (lambda a, b: at.conv2d(np.asfortranarray(np.zeros((1, 2, 5, 5), np.float32)), np.zeros((3, 2, 3, 3), np.float32), "fp32"), ValueError, "C-ordered"),
        (lambda a, b: at.Lut.load("/nonexistent/x.lut"), FileNotFoundError, "x.lut"),
        (lambda a, b: at.Plan("fwd=mbm:7,bogus=fp32"), ValueError, "bogus"),
    ],
)
def test_bad_input_is_a_one_line_python_exception(call, kind, words):
    a, b = np.ones((4, 5), np.float32), np.ones((5, 3), np.float32)
    with pytest.raises(kind) as e:
        call(a, b)
    assert words in str(e.value), str(e.value)
    assert one_line(e), str(e.value)


def test_a_corrupt_lut_file_is_a_value_error_naming_the_file(tmp_path):
    good = tmp_path / "good.lut"
    at.Lut.build("mbm", 4).save(good)
    data = bytearray(good.read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / "corrupt.lut"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        at.Lut.load(bad)
    assert "corrupt.lut" in str(e.value) and one_line(e)
    trunc = tmp_path / "short.lut"
    trunc.write_bytes(bytes(data[:40]))
    with pytest.raises(ValueError) as e:
        at.Multiplier(f"lut:{trunc}")
    assert "short.lut" in str(e.value) and one_line(e)
