"""The streaming resampler gives torchaudio's samples, bit for bit, however it is fed."""

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


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("orig, new", RATES)
def test_equal_to_torchaudio(orig, new, threads):
    rng = np.random.default_rng(orig + new)
    with torch_threads(threads):
        for channels in (1, 2):
            for n in (0, 1, 319, 20_000, 20_481, 47_521, 150_001):
                x = torch.from_numpy(rng.standard_normal((channels, n)).astype(np.float32))
                want = F.resample(x, orig, new, **RESAMPLE_KW) if n else x[:, :0]
                assert want.shape[1] == -(-n * new // orig)
                for block in (999, 1 << 16, 1 << 20):
                    got = run(SincResampler(orig, new, channels), x, block)
                    assert torch.equal(got, want), (channels, n, block)


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
