"""tokpack._kernels, the compiled loops of the channels-last SEANet: group-norm moments,
and the one-pass norm + residual sum + ELU (codecs/encodec/channels_last.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tokpack import _kernels


def _apply(x, scale, shift, *, elu=True, threads=1, extra=None):
    out = np.full_like(x, np.nan)
    terms = ((x, scale, shift),) + ((extra,) if extra else ())
    _kernels.apply(out, terms, x.shape[1], elu, 1.0, threads)
    return out


def test_moments_are_the_float64_mean_and_biased_variance():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 65_535, 65_536, 300_001):
        x = (rng.standard_normal(n) * 3 + 0.5).astype(np.float32)
        for threads in (1, 2, 3):
            mean, var = _kernels.moments(x, threads)
            assert mean == pytest.approx(x.astype(np.float64).mean(), rel=1e-12, abs=1e-12), n
            assert var == pytest.approx(x.astype(np.float64).var(), rel=1e-9, abs=1e-12), n
    assert _kernels.moments(np.full(10, 2.5, np.float32), 1) == (2.5, 0.0)


def test_elu_is_torchs_within_float_rounding():
    """ELU(x) for x from -100 to 5, the limits and specials: within 1.5e-7 of float64's
    expm1 (relative), and -0.0/+-inf/nan as torch gives them (up to the sign of zero)."""
    x = np.linspace(-100, 5, 1_000_003, dtype=np.float32)
    x = np.concatenate([x, np.float32([-1e-30, -1e-10, -1e-6, -0.0, 0.0, -87.3, -88.7, -1e30,
                                       np.inf, -np.inf, np.nan])])[:, None]
    got = _apply(x, np.ones(1, np.float32), np.zeros(1, np.float32))[:, 0]
    want = torch.nn.functional.elu(torch.from_numpy(x[:, 0]).double()).numpy()
    finite = np.isfinite(want)
    rel = np.abs(got[finite] - want[finite]) / np.maximum(np.abs(want[finite]), 1e-38)
    assert rel.max() < 1.5e-7
    assert np.array_equal(got[~finite], want[~finite].astype(np.float32), equal_nan=True)


def test_apply_is_the_normed_sum_and_independent_of_threads():
    rng = np.random.default_rng(1)
    for rows, channels in ((1, 1), (3, 5), (3001, 32), (40_000, 3)):
        a = rng.standard_normal((rows, channels)).astype(np.float32)
        b = rng.standard_normal((rows, channels)).astype(np.float32)
        sa, ha, sb, hb = (rng.standard_normal(channels).astype(np.float32) for _ in range(4))
        for elu in (False, True):
            want = a.astype(np.float64) * sa + ha + b * sb.astype(np.float64) + hb
            if elu:
                want = np.where(want > 0, want, np.expm1(want))
            got = [_apply(a, sa, ha, elu=elu, threads=t, extra=(b, sb, hb)) for t in (1, 2, 5)]
            assert np.allclose(got[0], want, rtol=1e-5, atol=1e-5), (rows, channels, elu)
            assert all(np.array_equal(g, got[0]) for g in got[1:]), (rows, channels, elu)
            one = _apply(a, sa, ha, elu=elu)
            want = a.astype(np.float64) * sa + ha
            if elu:
                want = np.where(want > 0, want, np.expm1(want))
            assert np.allclose(one, want, rtol=1e-6, atol=1e-6)


def test_apply_writes_into_a_view_and_nothing_else():
    """channels_last writes a layer's output inside its padding: a row range of a buffer."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    buf = np.full((10, 2), -7.0, np.float32)
    _kernels.apply(buf[2:8], ((x, np.ones(2, np.float32), np.zeros(2, np.float32)),), 2,
                   False, 1.0, 2)
    assert np.array_equal(buf[2:8], x)
    assert (buf[:2] == -7).all() and (buf[8:] == -7).all()


def test_bad_buffers_are_refused():
    ok = np.zeros((4, 2), np.float32)
    one = np.ones(2, np.float32)
    with pytest.raises(TypeError, match="float32"):
        _kernels.apply(ok, ((ok.astype(np.float64), one, one),), 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="expected 8"):
        _kernels.apply(ok, ((ok[:3], one, one),), 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="expected 2"):
        _kernels.apply(ok, ((ok, np.ones(3, np.float32), one),), 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="multiple of channels"):
        _kernels.apply(ok, ((ok, one, one),), 3, True, 1.0, 1)
    with pytest.raises(ValueError, match="one or two"):
        _kernels.apply(ok, ((ok, one, one),) * 3, 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="one or two"):
        _kernels.apply(ok, (), 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="positive"):
        _kernels.apply(ok, ((ok, one, one),), 0, True, 1.0, 1)
    with pytest.raises((TypeError, ValueError)):  # read-only output
        _kernels.apply(np.frombuffer(bytes(32), np.float32), ((ok, one, one),), 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="non-contiguous|contiguous"):
        _kernels.apply(np.zeros((4, 4), np.float32)[:, ::2], ((ok, one, one),), 2, True, 1.0, 1)
    with pytest.raises(ValueError, match="empty"):
        _kernels.moments(np.zeros(0, np.float32), 1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_one_openmp_runtime_in_the_process():
    """The kernels' OpenMP library is torch's own (channels_last imports them after torch):
    one libgomp mapped, so one thread pool, not two spinning against each other."""
    from tokpack.codecs.encodec import channels_last

    assert channels_last._load_kernels() is _kernels
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libgomp" in line}
    assert len(paths) == 1, paths


def test_elu_alone_is_applys_elu_for_any_threads_and_in_place():
    rng = np.random.default_rng(2)
    for n in (1, 7, 65_535, 65_536, 300_001):
        x = (rng.standard_normal(n) * 4).astype(np.float32)
        x[x == 0] = 1.0  # apply's x * 1 + 0 makes -0.0 +0.0
        want = _apply(x[:, None], np.ones(1, np.float32), np.zeros(1, np.float32))[:, 0]
        for threads in (1, 2, 5):
            out = np.full_like(x, np.nan)
            _kernels.elu(out, x, 1.0, threads)
            assert np.array_equal(out, want), (n, threads)
        y = x.copy()
        _kernels.elu(y, y, 1.0, 2)
        assert np.array_equal(y, want), n
    x = np.float32([-2.0, -0.5, 3.0])
    out = np.empty_like(x)
    _kernels.elu(out, x, 0.5, 1)
    assert np.allclose(out, [0.5 * np.expm1(-2.0), 0.5 * np.expm1(-0.5), 3.0], rtol=2e-7)
    _kernels.elu(out[:0], x[:0], 1.0, 1)  # empty: nothing to do
    with pytest.raises(ValueError, match="x has 3 values, out 2"):
        _kernels.elu(out[:2], x, 1.0, 1)
    with pytest.raises(TypeError, match="float32"):
        _kernels.elu(out, x.astype(np.float64), 1.0, 1)
    with pytest.raises((TypeError, ValueError)):  # read-only output
        _kernels.elu(np.frombuffer(bytes(12), np.float32), x, 1.0, 1)


def test_channels_last_elu_is_torchs_within_rounding_in_any_layout():
    """channels_last.elu: the kernels for dense float32 CPU tensors (contiguous or
    channels-last, the layout kept), torch's ELU bit for bit where they cannot run."""
    from tokpack.codecs.encodec import channels_last

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 1, 3001, generator=g) * 3
    for t in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, 0]):
        got = channels_last.elu(t, 1.0)
        want = torch.nn.functional.elu(t.double(), 1.0)
        assert got.dtype == torch.float32 and got.stride() == t.stride()
        assert float(((got - want).abs() / want.abs().clamp(min=1e-30)).max()) < 1.5e-7
        assert not torch.equal(got, torch.nn.functional.elu(t, 1.0))  # the kernels ran
    for t in (x.double(), x[..., ::2]):  # float64; not dense: torch's
        assert torch.equal(channels_last.elu(t, 0.7), torch.nn.functional.elu(t, 0.7))
