"""EnCodec's SEANet run in channels-last memory (codecs/encodec/channels_last.py): EnCodec's
computation step by step, so in float64 (where the kernels' summation order hardly shows)
it equals ``model.encoder``/``model.decoder`` to ~1e-12, for every length and batch; in
float32, with the compiled norm + ELU (tokpack._kernels) or torch's ops, within float32's
rounding of them."""

from __future__ import annotations

import copy
import weakref

import numpy as np
import pytest
import torch

from tokpack.codecs.encodec import channels_last, streaming


@pytest.fixture(scope="module")
def nets64(test_24khz, test_48khz):
    """float64 copies of both test models' encoders and decoders: the 24 kHz one causal
    (left padding, trim_right_ratio), the 48 kHz one not (reflect padding both sides)."""
    return {name: (copy.deepcopy(m.model.encoder).double().eval(),
                   copy.deepcopy(m.model.decoder).double().eval(), m.model.channels)
            for name, m in (("test_24khz", test_24khz), ("test_48khz", test_48khz))}


#: pad1d's short-input rule (1, 2, 7), odd frame counts, a 48 kHz segment and one short of it
LENGTHS = [1, 2, 7, 319, 320, 321, 47_519, 48_000]


@pytest.mark.parametrize("name", ["test_24khz", "test_48khz"])
def test_equals_encodec_nets_in_float64(nets64, name):
    encoder, decoder, channels = nets64[name]
    assert channels_last.supported(encoder) and channels_last.supported(decoder)
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for n in LENGTHS:
            x = torch.from_numpy(rng.standard_normal((2, channels, n)) * 0.1)  # 2 rows
            want = encoder(x)
            got = channels_last.run(encoder, x)
            assert got.shape == want.shape and got.is_contiguous(), n
            assert (got - want).abs().max() <= 1e-10 * max(1.0, float(want.abs().max())), n
            want = decoder(want)
            got = channels_last.run(decoder, got)
            assert got.shape == want.shape and got.is_contiguous(), n
            assert (got - want).abs().max() <= 1e-10 * max(1.0, float(want.abs().max())), n


def test_one_segment_is_encoded_by_encodecs_own_call(test_48khz):
    """A signal of at most one full segment is encoded by model.encoder itself (the call
    encodec makes), so its codes are encodec's bit for bit on any CPU."""
    model = test_48khz.model
    model.set_target_bandwidth(6.0)
    rng = np.random.default_rng(2)
    with torch.inference_mode():
        for n in (480, 48_000, 47_520 + 48_000 - 1):
            x = torch.from_numpy((rng.standard_normal((2, n)) * 0.1).astype(np.float32))
            enc = streaming.SegmentEncoder(model, 4, 48_000, 47_520)
            segs = enc.feed(x) + enc.finish()
            frames = model.encode(x[None])
            assert enc.exact and len(segs) == len(frames), n
            for seg, (codes, _) in zip(segs, frames):
                assert np.array_equal(seg.codes, codes[0].numpy()), n


def _torch_ops_only(monkeypatch):
    """channels_last as where tokpack._kernels was not built."""
    monkeypatch.setattr(channels_last, "_load_kernels", lambda: None)
    monkeypatch.setattr(channels_last, "_PLANS", weakref.WeakKeyDictionary())


def test_float32_with_and_without_kernels_agree_with_encodec_nets(test_48khz, monkeypatch):
    """The 48 kHz nets in float32, 3 rows (some steps batched, some row by row): with the
    kernels and with torch's ops alone, each agrees with encodec's own nets within float32
    rounding amplified by ~20 layers (measured: 5e-6 of the largest value; bound 1e-4)."""
    encoder, decoder = test_48khz.model.encoder, test_48khz.model.decoder
    assert channels_last._load_kernels() is not None  # built here, so the fused path runs
    rng = np.random.default_rng(3)
    with torch.inference_mode():
        cases = []
        for n in (1, 7, 321, 9_601, 48_000):
            x = torch.from_numpy((rng.standard_normal((3, 2, n)) * 0.1).astype(np.float32))
            emb = encoder(x)
            cases.append((n, x, emb, decoder(emb)))

        def check():
            for n, x, emb, audio in cases:
                got = channels_last.run(encoder, x)
                assert got.shape == emb.shape, n
                assert (got - emb).abs().max() <= 1e-4 * float(emb.abs().max()), n
                got = channels_last.run(decoder, emb)  # encodec's embedding: the decoder's rounding
                assert got.shape == audio.shape, n
                assert (got - audio).abs().max() <= 1e-4 * float(audio.abs().max()), n

        check()
        _torch_ops_only(monkeypatch)
        check()


def test_the_kernels_path_is_deterministic(test_48khz):
    """Same input, same thread count: the same bits (the norm's moments are summed per
    thread range in a fixed order)."""
    x = torch.from_numpy((np.random.default_rng(4).standard_normal((2, 2, 20_000)) * 0.1)
                         .astype(np.float32))
    with torch.inference_mode():
        a = channels_last.run(test_48khz.model.encoder, x)
        b = channels_last.run(test_48khz.model.encoder, x)
    assert torch.equal(a, b)
