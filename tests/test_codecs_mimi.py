"""Mimi through transformers (tokpack.codecs.mimi.model): the official config, the test
model, and the streams: codes independent of how audio is fed, equal to one pass but for
the last frame, audio within float rounding of one pass, state that does not grow."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from transformers import MimiConfig  # noqa: E402

from tokpack.codecs.mimi import model as mimi  # noqa: E402
from tokpack.errors import AudioError, ModelError, TokensError, UsageError  # noqa: E402

HOP = 1920


def signal(n: int, seed: int = 0) -> torch.Tensor:
    """[1, n] float32: a random walk (speech-like spectral tilt), peak 0.5."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(n)) * 0.01
    if n > 1:
        x -= np.linspace(x[0], x[-1], n)
    peak = np.abs(x).max() if n else 1.0
    return torch.from_numpy((0.5 * x / max(peak, 1e-9)).astype(np.float32))[None]


def encode_in_pieces(model, x: torch.Tensor, n_q: int, sizes: list[int]) -> np.ndarray:
    """Codes of ``x`` fed to a StreamEncoder in pieces of ``sizes`` (cycled), then finish()."""
    enc = mimi.StreamEncoder(model, n_q)
    parts, a, i = [], 0, 0
    while a < x.shape[1]:
        b = a + sizes[i % len(sizes)]
        parts.append(enc.feed(x[:, a:b]))
        a, i = b, i + 1
    parts.append(enc.finish())
    for part in parts:
        assert part.dtype == np.uint16 and part.shape[0] == n_q
    return np.concatenate(parts, axis=1)


def decode_in_pieces(model, codes: np.ndarray, sizes: list[int]) -> torch.Tensor:
    dec = mimi.StreamDecoder(model)
    parts, a, i = [], 0, 0
    while a < codes.shape[1]:
        b = a + sizes[i % len(sizes)]
        parts.append(dec.feed(codes[:, a:b]))
        a, i = b, i + 1
    parts.append(dec.finish())
    for part in parts:
        assert part.dtype == torch.float32 and part.shape[0] == 1
    return torch.cat(parts, dim=1)


def small_model(**changes):
    """Mimi's layout with tiny widths, 2 transformer layers and a window of 6 steps."""
    fields = dict(hidden_size=32, num_filters=4, num_hidden_layers=2, intermediate_size=64,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=16, sliding_window=6,
                  codebook_size=16, codebook_dim=8, vector_quantization_hidden_dimension=8,
                  num_quantizers=2, upsample_groups=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return mimi.build_model(MimiConfig(**{**fields, **changes}))


@pytest.fixture(scope="module")
def model(test_mimi):
    """The test model as tokpack loads it (built and cached on first use)."""
    return test_mimi.model


@pytest.fixture(scope="module")
def walk_codes(model) -> np.ndarray:
    """Streamed codes (8 codebooks) of 3 s + 777 samples: a whole piece, then a partial
    one ending in a partial frame."""
    return encode_in_pieces(model, signal(72_777, seed=5), 8, [72_777])


def test_official_config_is_kyutai_mimi():
    config = mimi.official_config()
    assert (config.sampling_rate, config.frame_size, config.frame_rate) == (24_000, HOP, 12.5)
    assert (config.num_quantizers, config.codebook_size, config.sliding_window) == (32, 2048, 250)
    # transformers' defaults are kyutai/mimi's today; official_config() states them anyway
    defaults = MimiConfig().to_dict()
    stated = config.to_dict()
    for key in mimi.OFFICIAL_CONFIG:
        if key != "frame_rate":
            assert stated[key] == defaults[key], key
    assert MimiConfig().frame_rate == 12.5


@pytest.mark.slow
def test_building_the_test_model_leaves_the_callers_rng():
    before = torch.random.get_rng_state()
    mimi.build_test_model()
    assert torch.equal(before, torch.random.get_rng_state())


def test_test_model_fills_its_codebooks(model):
    books = [layer.codebook.embed for rvq in (model.quantizer.semantic_residual_vector_quantizer,
                                              model.quantizer.acoustic_residual_vector_quantizer)
             for layer in rvq.layers]
    assert len(books) == 32
    for book in books:
        assert book.shape == (2048, 256) and bool(torch.isfinite(book).all())
        assert len(torch.unique(book[:, 0])) > 1000  # not the fresh model's zeros


def test_encoder_codes_do_not_depend_on_feeding(model):
    x = signal(72_777, seed=1)
    whole = encode_in_pieces(model, x, 8, [x.shape[1]])
    assert whole.shape == (8, math.ceil(72_777 / HOP))
    for sizes in ([1919], [7777], [0, 5, 48_000, 1, 13_001]):
        assert np.array_equal(encode_in_pieces(model, x, 8, sizes), whole), sizes
    # sample by sample: the first 4000 samples so, the rest at once
    enc = mimi.StreamEncoder(model, 8)
    parts = [enc.feed(x[:, i:i + 1]) for i in range(4000)]
    parts += [enc.feed(x[:, 4000:]), enc.finish()]
    assert np.array_equal(np.concatenate(parts, axis=1), whole)


@pytest.mark.parametrize("n", [0, 1, 1919, 1920, 1921, 47_999, 48_000, 48_001])
def test_encoder_frame_count(model, n):
    codes = encode_in_pieces(model, signal(n, seed=2), 4, [max(n, 1)])
    assert codes.shape == (4, math.ceil(n / HOP))


def test_encoder_agrees_with_one_pass(model, walk_codes):
    """Measured: equal but for the last frame, whose padding differs by design (module
    doc). Here every nearest code of the first 8 codebooks wins by >= 2.6e-5 of its
    distance, ~100x the one-pass/stream rounding difference (~2e-7), so no near-tie can
    flip a code on another CPU either."""
    x = signal(72_777, seed=5)
    one_pass = mimi.reference_encode(model, x, 8)
    assert one_pass.shape == walk_codes.shape
    assert np.array_equal(one_pass[:, :-1], walk_codes[:, :-1])
    whole_frames = x[:, : 36 * HOP]  # no padding anywhere: every frame equal
    assert np.array_equal(mimi.reference_encode(model, whole_frames, 8),
                          encode_in_pieces(model, whole_frames, 8, [9999]))


def test_decoder_matches_one_pass(model, walk_codes):
    streamed = decode_in_pieces(model, walk_codes, [walk_codes.shape[1]])
    one_pass = mimi.reference_decode(model, walk_codes)
    assert streamed.shape == one_pass.shape == (1, walk_codes.shape[1] * HOP)
    # measured: 1e-6 of the peak (30 s of speech: 3e-5 on a peak of 33, before the
    # test model's output gain of 2^-6)
    peak = float(one_pass.abs().max())
    assert float((streamed - one_pass).abs().max()) <= 1e-5 * peak


def test_decoder_does_not_depend_on_split(model, walk_codes):
    whole = decode_in_pieces(model, walk_codes, [walk_codes.shape[1]])
    for sizes in ([1], [0, 3, 7, 25, 2]):
        assert torch.equal(decode_in_pieces(model, walk_codes, sizes), whole), sizes
    dec = mimi.StreamDecoder(model)
    assert dec.feed(np.zeros((8, 0), dtype=np.int64)).shape == (1, 0)
    assert dec.finish().shape == (1, 0)


def test_state_does_not_grow():
    """A small Mimi (window of 6 steps) streamed far past its window holds as much state
    after 4 s as after 2 s; its KV cache keeps window - 1 steps per layer."""
    small = small_model()
    enc = mimi.StreamEncoder(small, 2, piece_frames=5)
    dec = mimi.StreamDecoder(small, piece_frames=5)
    x = signal(8 * 12_000, seed=3)
    held = []
    for i in range(8):  # pieces of 0.5 s = 6.25 frames: the buffers' fill varies
        codes = enc.feed(x[:, i * 12_000:(i + 1) * 12_000])
        dec.feed(codes)
        if i in (3, 7):
            held.append((enc.state_elements, dec.state_elements))
    assert held[0] == held[1]
    for cache in (enc._encoder_cache, dec._cache):
        assert {layer.keys.shape[-2] for layer in cache.layers} == {5}


def test_test_model_codes_are_varied(model, corpus_dir):
    """At least 64 distinct codes in each of the first 4 codebooks on 10 s of speech (125
    frames); measured 93, 100, 110, 116."""
    import soundfile as sf
    import torchaudio

    audio, rate = sf.read(corpus_dir / "real" / "speech_en_f_allison_8k.wav", dtype="float32",
                          always_2d=True)
    x = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1))[None], rate, 24_000)
    codes = mimi.reference_encode(model, x[:, : 10 * 24_000], 4)
    distinct = [len(np.unique(row)) for row in codes]
    assert min(distinct) >= 64, distinct


def test_typed_errors(model):
    with pytest.raises(UsageError):
        mimi.StreamEncoder(model, 33)
    with pytest.raises(UsageError):
        mimi.StreamEncoder(model, 0)
    enc = mimi.StreamEncoder(model, 8)
    with pytest.raises(AudioError):
        enc.feed(torch.zeros(2, 100))
    with pytest.raises(AudioError):
        enc.feed(torch.zeros(1, 100, dtype=torch.int16))
    enc.finish()
    with pytest.raises(UsageError):
        enc.feed(torch.zeros(1, 10))
    dec = mimi.StreamDecoder(model)
    with pytest.raises(TokensError):
        dec.feed(np.full((8, 3), 2048))
    with pytest.raises(TokensError):
        dec.feed(np.zeros((8, 3), dtype=np.float32))
    dec.feed(np.zeros((8, 3), dtype=np.int64))
    with pytest.raises(TokensError):
        dec.feed(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ModelError):  # one pass pads these on both sides: not streamable
        mimi.StreamDecoder(small_model(use_causal_conv=False))


def test_transposed_convolution_as_one_matrix_product():
    """The decoder's kernel-2s transposed convolutions as a product over pairs of input
    frames (mimi.model._tap_matrix): conv_transpose1d's output within float rounding, for
    every input length a stream can give; grouped ones keep conv_transpose1d."""
    gen = torch.Generator().manual_seed(5)
    for cin, cout, s in ((6, 4, 3), (16, 8, 8)):
        conv = torch.nn.ConvTranspose1d(cin, cout, 2 * s, stride=s, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        matrix = mimi._tap_matrix(conv)
        for t in (1, 2, 7):
            x = torch.randn(2, cin, t, generator=gen)
            want = torch.nn.functional.conv_transpose1d(x, conv.weight, None, s)
            got = mimi._tap_transposed(x, matrix, s)
            assert got.shape == want.shape == (2, cout, (t + 1) * s)
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (cin, cout, s, t)
    grouped = torch.nn.ConvTranspose1d(4, 4, 4, stride=2, groups=4, bias=False)
    assert mimi._tap_matrix(grouped) is None
    assert mimi._tap_matrix(torch.nn.ConvTranspose1d(4, 4, 5, stride=2)) is None
