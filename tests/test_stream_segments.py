"""The segmented model (test_48khz) in batches of segments: encodec's codes and scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokpack.codecs.encodec import streaming
from tokpack.codec.agreement import compare_codes
from tokpack.codec.threads import torch_threads

#: one sample; one segment +- 1; two; a full batch of 4 (+1); an odd tail after 10
LENGTHS = [1, 47_519, 47_521, 48_000, 95_041, 4 * 47_520 + 480, 4 * 47_520 + 481,
           10 * 47_520 + 333]


def stereo(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal((2, n)), axis=1) * 0.01
    x *= np.array([[1.0], [0.4]])
    return torch.from_numpy((0.5 * x / max(1e-9, np.abs(x).max())).astype(np.float32))


def encode_segments(model, x: torch.Tensor, piece: int) -> list:
    enc = streaming.SegmentEncoder(model, 4, 48_000, 47_520)
    segs = []
    for a in range(0, x.shape[1], piece):
        segs += enc.feed(x[:, a:a + piece])
    return segs + enc.finish()


@pytest.mark.parametrize("threads", [pytest.param(1, marks=pytest.mark.slow), 2])  # 1: 37 s
def test_batched_segments_agree_with_encodec(test_48khz, threads):
    """The same segments, whatever the feeding (the batches depend on the length alone),
    with encodec's scales bit for bit (each computed alone, as encodec does). The codes of
    batched segments agree with EncodecModel.encode's one-at-a-time codes within the
    bound of docs/PERFORMANCE.md ("Determinism"); decoded in batches, they give encodec's
    decoder's audio within rounding."""
    model = test_48khz.model
    model.set_target_bandwidth(6.0)
    with torch_threads(threads), torch.inference_mode():
        for n in LENGTHS:
            x = stereo(n, seed=n)
            frames = model.encode(x[None])
            segs = encode_segments(model, x, 30_000)
            again = encode_segments(model, x, 1 << 22)
            assert [(s.codes.tolist(), s.scale) for s in segs] == \
                [(s.codes.tolist(), s.scale) for s in again], n
            assert len(segs) == len(frames), n
            for i, (seg, (codes, scale)) in enumerate(zip(segs, frames)):
                assert seg.codes.shape == codes[0].shape
                assert seg.scale == scale.item()
                piece = x[None, :, i * 47_520:i * 47_520 + 48_000]
                agreement = compare_codes(model, model.encoder(piece / scale),
                                          codes[0].numpy(), seg.codes)
                assert agreement.equal_fraction >= 0.97 and agreement.all_near_ties, (n, i)
            ours = [(torch.from_numpy(s.codes[None].astype(np.int64)), torch.tensor([[s.scale]]))
                    for s in segs]
            want = model.decode(ours)[0, :, :n].numpy()
            dec = streaming.SegmentDecoder(model, 47_520)
            got = torch.cat([dec.feed([(s.codes, s.scale) for s in segs[:3]]),
                             dec.feed([(s.codes, s.scale) for s in segs[3:]]),
                             dec.finish()], dim=-1)[:, :n].numpy()
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_segments_are_emitted_as_they_complete(test_48khz):
    """Full segments come out of feed() in batches, before the end of the signal."""
    enc = streaming.SegmentEncoder(test_48khz.model, 4, 48_000, 47_520, batch=2)
    x = stereo(5 * 47_520, seed=5)
    with torch.inference_mode():
        first = enc.feed(x[:, : 2 * 47_520 + 480])
        assert len(first) == 2
        rest = enc.feed(x[:, 2 * 47_520 + 480:]) + enc.finish()
    assert len(first) + len(rest) == 5
    assert enc.buf.n <= 48_000  # only the next segment's samples are kept
