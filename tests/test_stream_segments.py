"""The segmented model (test_48khz) in batches of segments: encodec's codes and scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokpack.codec import streaming
from tokpack.codec.threads import torch_threads

#: one sample; one segment +- 1; two; a full batch of 4 (+1); an odd tail after 10
LENGTHS = [1, 47_519, 47_521, 48_000, 95_041, 4 * 47_520 + 480, 4 * 47_520 + 481,
           10 * 47_520 + 333]


def stereo(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal((2, n)), axis=1) * 0.01
    x *= np.array([[1.0], [0.4]])
    return torch.from_numpy((0.5 * x / max(1e-9, np.abs(x).max())).astype(np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_batched_segments_match_encodec(test_48khz, threads):
    """Same segments and scales (bit for bit) as EncodecModel.encode; codes agree (the
    batched encoder's embeddings differ from batch-1 ones by float rounding, which has
    not flipped a code on these signals); audio within rounding of EncodecModel.decode."""
    model = test_48khz.model
    model.set_target_bandwidth(6.0)
    agree, total = 0, 0
    with torch_threads(threads), torch.inference_mode():
        for n in LENGTHS:
            x = stereo(n, seed=n)
            frames = model.encode(x[None])
            enc = streaming.SegmentEncoder(model, 4, 48_000, 47_520)
            segs = []
            for a in range(0, n, 30_000):
                segs += enc.feed(x[:, a:a + 30_000])
            segs += enc.finish()
            assert len(segs) == len(frames), n
            for seg, (codes, scale) in zip(segs, frames):
                assert seg.codes.shape == codes[0].shape
                assert seg.scale == scale.item()
                agree += int(np.sum(seg.codes == codes[0].numpy()))
                total += seg.codes.size
            want = model.decode(frames)[0, :, :n].numpy()
            dec = streaming.SegmentDecoder(model, 47_520)
            got = torch.cat([dec.feed([(s.codes, s.scale) for s in segs[:3]]),
                             dec.feed([(s.codes, s.scale) for s in segs[3:]]),
                             dec.finish()], dim=-1)[:, :n].numpy()
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    assert agree / total >= 0.999


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
