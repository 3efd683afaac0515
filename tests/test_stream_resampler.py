"""The streaming resampler: the same samples however it is fed, torchaudio's within rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio.functional as F

from tokpack.codec.audio import RESAMPLE_KW, resample
from tokpack.codec.resampler import SincResampler, sinc_kernel
from tokpack.codec.threads import torch_threads

RATES = [(44_100, 24_000), (24_000, 44_100), (8_000, 24_000), (48_000, 24_000),
         (22_050, 48_000), (96_000, 48_000)]
#: coprime rates make one huge polyphase filter (8001 x 24038 taps): tested once, short
COPRIME = (24_000, 8_001)


def test_kernel_is_torchaudios():
    from torchaudio.functional.functional import _get_sinc_resample_kernel

    for orig, new in RATES + [COPRIME]:
        ours, width = sinc_kernel(orig, new)
        theirs, their_width = _get_sinc_resample_kernel(
            orig, new, math.gcd(orig, new), 6, 0.99, "sinc_interp_hann", None,
            torch.device("cpu"), torch.float32)
        assert width == their_width and torch.equal(ours, theirs)


def run(r: SincResampler, x: torch.Tensor, block: int) -> torch.Tensor:
    parts = [r.process(x[:, a:a + block]) for a in range(0, x.shape[1], block)]
    return torch.cat(parts + [r.finish()], dim=-1)


def ragged(n: int, seed: int) -> list[int]:
    sizes = np.random.default_rng(seed).integers(1, 30_000, size=n // 1000 + 2)
    sizes[::5] = 1
    return sizes.tolist()


def run_ragged(r: SincResampler, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    parts, a = [], 0
    for size in sizes + [x.shape[1]]:
        parts.append(r.process(x[:, a:a + size]))
        a += size
    return torch.cat(parts + [r.finish()], dim=-1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("orig, new", RATES)
def test_same_samples_however_fed(orig, new, threads):
    """Guaranteed: the calls depend on the signal's length alone, so any feeding gives the
    same bits; torchaudio's samples within float rounding (and bit for bit for a signal
    short enough for one call, which is torchaudio's computation itself)."""
    rng = np.random.default_rng(orig + new)
    with torch_threads(threads):
        for channels in (1, 2):
            for n in (0, 1, 319, 20_000, 20_481, 47_521, 150_001):
                x = torch.from_numpy(rng.standard_normal((channels, n)).astype(np.float32))
                want = run(SincResampler(orig, new, channels), x, 1 << 20)
                assert want.shape[1] == -(-n * new // orig)
                for block in (999, 1 << 16):
                    got = run(SincResampler(orig, new, channels), x, block)
                    assert torch.equal(got, want), (channels, n, block)
                got = run_ragged(SincResampler(orig, new, channels), x, ragged(n, n))
                assert torch.equal(got, want), (channels, n, "ragged")
                ref = F.resample(x, orig, new, **RESAMPLE_KW) if n else x[:, :0]
                r = SincResampler(orig, new, channels)
                if r._width + n - r._reserve < r._block:  # one call
                    assert torch.equal(want, ref), (channels, n)
                else:
                    peak = max(1.0, float(ref.abs().max()))
                    assert float((want - ref).abs().max()) <= 1e-6 * peak, (channels, n)


def test_coprime_rates_equal_torchaudio():
    orig, new = COPRIME
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 20_481)).astype(np.float32))
    with torch_threads(1):
        want = F.resample(x, orig, new, **RESAMPLE_KW)
        assert torch.equal(run(SincResampler(orig, new, 1), x, 999), want)


def test_equal_rates_pass_through():
    x = torch.randn(2, 1000)
    r = SincResampler(24_000, 24_000, 2)
    assert r.process(x) is x and r.finish().shape == (2, 0)
    assert resample(x, 24_000, 24_000) is x


def test_finished_resampler_refuses_more():
    r = SincResampler(44_100, 24_000, 1)
    r.finish()
    with pytest.raises(ValueError):
        r.process(torch.zeros(1, 10))
