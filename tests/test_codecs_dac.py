"""DAC's windowed encoder and decoder against one pass, the receptive fields they rely
on, the official configs and the test model (tokpack.codecs.dac.model).

The test model is tokpack's (built once per session, ~5-10 s). Windows of a few dozen frames make a 2 s signal
cross several window boundaries; the default windows are measured on 30 s (the module doc).
The diversity check on 10 s of corpus speech is marked slow (``pytest -m slow``)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from transformers import DacConfig  # noqa: E402

from tokpack.codec.testmodels import REFERENCE_SHA256, synthetic_training_audio  # noqa: E402
from tokpack.codec.threads import torch_threads  # noqa: E402
from tokpack.codec.weights import weights_sha256  # noqa: E402
from tokpack.codecs.dac.model import (  # noqa: E402
    REPO_IDS,
    WindowedDecoder,
    WindowedEncoder,
    build_model,
    build_test_model,
    decoder_context,
    encoder_context,
    hop_length,
    official_config,
    reference_decode,
    reference_encode,
)
from tokpack.errors import ModelError, TokensError, UsageError  # noqa: E402

CORPUS_DIR = Path(__file__).resolve().parents[2] / "shared/corpus"
HOP = 512
#: codes equal to one pass, at least: measured 1.0 (30 s of speech, 1 and 2 threads); a
#: near-tie that rounding turns around changes one frame's codes from that level on
AGREEMENT = 0.99
#: decoded audio, windowed vs one pass: measured 2.8e-7 max on 30 s (peak 0.28)
DECODE_TOLERANCE = 1e-5
#: small windows, so that the test signals cross several window boundaries
ENC_WINDOW = 64
DEC_WINDOW = 32


def encode_in_pieces(encoder: WindowedEncoder, x: torch.Tensor, sizes) -> np.ndarray:
    out, pos = [], 0
    for n in sizes:
        if pos >= x.shape[1]:
            break
        out.append(encoder.feed(x[:, pos:pos + n]))
        pos += n
    out.append(encoder.finish())
    return np.concatenate(out, axis=1)


def decode_in_pieces(decoder: WindowedDecoder, codes: np.ndarray, sizes) -> torch.Tensor:
    out, pos = [], 0
    for n in sizes:
        if pos >= codes.shape[1]:
            break
        out.append(decoder.feed(codes[:, pos:pos + n]))
        pos += n
    out.append(decoder.finish())
    return torch.cat(out, dim=1)


def tiny_model(ratios: list[int]):
    """The official strides with a few channels: the same framing, windows and receptive
    field as the real models in a fraction of the time (transformers' random weights)."""
    config = DacConfig(encoder_hidden_size=2, decoder_hidden_size=32, downsampling_ratios=ratios,
                       upsampling_ratios=ratios[::-1], n_codebooks=2, codebook_dim=4,
                       sampling_rate=44_100 if ratios[2] == 8 else 24_000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(config)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a 2-core machine shared with other work, every parallel op
    can wait for a descheduled thread (a one-frame encode measured 20x slower at 2)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def model(test_dac_44khz):
    """The test model as tokpack loads it (built and cached on first use)."""
    return test_dac_44khz.model


@pytest.fixture(scope="module")
def signal() -> torch.Tensor:
    """2 s of synthetic sound, not a whole number of frames (172.27)."""
    return torch.from_numpy(synthetic_training_audio(44_100, 1, 2.0, seed=7))


@pytest.fixture(scope="module")
def one_pass_codes(model, signal) -> np.ndarray:
    return reference_encode(model, signal, 9)


@pytest.fixture(scope="module")
def windowed_codes(model, signal) -> np.ndarray:
    encoder = WindowedEncoder(model, 9, window_frames=ENC_WINDOW)
    return encode_in_pieces(encoder, signal, [signal.shape[1]])


# ----------------------------------------------------------------- configs, contexts


def test_official_configs():
    expected = {"dac_44khz": (44_100, [2, 4, 8, 8], 9, 512),
                "dac_24khz": (24_000, [2, 4, 5, 8], 32, 320),
                "dac_16khz": (16_000, [2, 4, 5, 8], 12, 320)}
    assert set(REPO_IDS) == set(expected)
    for name, (rate, ratios, n_codebooks, hop) in expected.items():
        config = official_config(name)
        assert (config.sampling_rate, list(config.downsampling_ratios), config.n_codebooks) == (
            rate, ratios, n_codebooks)
        assert list(config.upsampling_ratios) == ratios[::-1]
        assert (config.codebook_size, config.codebook_dim, config.hidden_size) == (1024, 8, 1024)
        assert (config.encoder_hidden_size, config.decoder_hidden_size) == (64, 1536)
        assert hop_length(config) == hop
        assert config.hop_length == 512  # as the hub's config.json says, even where wrong
    with pytest.raises(ModelError, match="unknown DAC model"):
        official_config("dac_48khz")


@pytest.mark.parametrize("ratios", [[2, 4, 8, 8], [2, 4, 5, 8]])
def test_contexts_are_the_receptive_fields(ratios):
    """The computed contexts are exactly what autograd says a frame depends on."""
    model = tiny_model(ratios).double()
    with torch.no_grad():  # weights ~1/sqrt(fan_in): no tanh saturation, no vanishing gradient
        for p in model.parameters():
            p.uniform_(-1.0, 1.0)
            if p.dim() == 3:
                p /= math.sqrt(p.shape[1] * p.shape[2])
    hop, frames, t = hop_length(model.config), 40, 20
    x = torch.randn(1, 1, frames * hop, dtype=torch.float64, requires_grad=True)
    model.encoder(x)[..., t].sum().backward()
    read = torch.nonzero(x.grad[0, 0]).flatten()
    left, right = encoder_context(model.config)
    assert (t - left) * hop <= read[0] < (t - left + 1) * hop
    assert (t + right) * hop <= read[-1] < (t + right + 1) * hop
    z = torch.randn(1, model.config.hidden_size, frames, dtype=torch.float64, requires_grad=True)
    model.decoder(z)[0, 0, t * hop:(t + 1) * hop].sum().backward()
    read = torch.nonzero(z.grad[0].abs().sum(dim=0)).flatten()
    assert (read[0].item(), read[-1].item()) == (t - decoder_context(model.config)[0],
                                                 t + decoder_context(model.config)[1])


# ------------------------------------------------------------------------ encoder


def test_windowed_codes_agree_with_one_pass(one_pass_codes, windowed_codes):
    assert one_pass_codes.shape == windowed_codes.shape == (9, math.ceil(88_200 / HOP))
    assert windowed_codes.dtype == np.uint16
    assert (windowed_codes == one_pass_codes).mean() >= AGREEMENT


def test_codes_do_not_depend_on_feed_sizes(model, signal, windowed_codes):
    sizes = itertools.chain([1] * 1500, itertools.cycle([1, 511, 7777]))
    encoder = WindowedEncoder(model, 9, window_frames=ENC_WINDOW)
    np.testing.assert_array_equal(encode_in_pieces(encoder, signal, sizes), windowed_codes)


@pytest.mark.parametrize("length", [0, 1, 511, 512, 513])
def test_frame_counts(model, signal, length):
    x = signal[:, :length]
    encoder = WindowedEncoder(model, 4)
    codes = np.concatenate([encoder.feed(x), encoder.feed(x[:, :0]), encoder.finish()], axis=1)
    assert codes.shape == (4, math.ceil(length / HOP)) and codes.dtype == np.uint16
    if length:
        assert (codes == reference_encode(model, x, 4)).mean() >= AGREEMENT


@pytest.mark.parametrize("ratios", [[2, 4, 8, 8], [2, 4, 5, 8]])
def test_frame_counts_at_window_boundaries(ratios):
    """Lengths around the window grid (4 frames) and around where the first windows can
    run (after 4 + 8 and 8 + 8 frames), fed whole and in pieces."""
    model = tiny_model(ratios)
    hop = hop_length(model.config)
    x = torch.from_numpy(synthetic_training_audio(model.config.sampling_rate, 1, 0.5, seed=3))
    for frames in (4, 12, 16):
        for length in (frames * hop - 1, frames * hop, frames * hop + 1):
            part = x[:, :length]
            whole = encode_in_pieces(WindowedEncoder(model, 2, window_frames=4), part, [length])
            pieces = encode_in_pieces(WindowedEncoder(model, 2, window_frames=4), part,
                                      itertools.cycle([hop - 1, 1, 2 * hop + 3]))
            assert whole.shape == (2, math.ceil(length / hop))
            np.testing.assert_array_equal(pieces, whole)
            assert (whole == reference_encode(model, part, 2)).mean() >= AGREEMENT


# ------------------------------------------------------------------------ decoder


@pytest.fixture(scope="module")
def decode_codes(one_pass_codes) -> np.ndarray:
    return one_pass_codes[:, :64]


@pytest.fixture(scope="module")
def windowed_audio(model, decode_codes) -> torch.Tensor:
    decoder = WindowedDecoder(model, window_frames=DEC_WINDOW)
    return decode_in_pieces(decoder, decode_codes, [decode_codes.shape[1]])


def test_windowed_audio_matches_one_pass(model, decode_codes, windowed_audio):
    one_pass = reference_decode(model, decode_codes)
    assert one_pass.shape == windowed_audio.shape == (1, 64 * HOP)
    assert windowed_audio.dtype == torch.float32
    assert one_pass.abs().max() > 0.01  # audio, not silence
    assert (windowed_audio - one_pass).abs().max() <= DECODE_TOLERANCE


def test_audio_does_not_depend_on_how_codes_are_split(model, decode_codes, windowed_audio):
    decoder = WindowedDecoder(model, window_frames=DEC_WINDOW)
    audio = decode_in_pieces(decoder, decode_codes, itertools.cycle([1, 0, 7, 20]))
    assert torch.equal(audio, windowed_audio)


def test_stride_5_decoders_give_whole_frames():
    """One pass of a 24/16 kHz decoder is 8 samples short; the windowed decoder's total
    is frames * hop, its tail zeros, the rest as one pass."""
    model = tiny_model([2, 4, 5, 8])
    codes = np.random.default_rng(0).integers(0, 1024, size=(2, 23))
    one_pass = reference_decode(model, codes)
    decoder = WindowedDecoder(model, window_frames=4)
    audio = decode_in_pieces(decoder, codes, itertools.cycle([3, 5]))
    assert one_pass.shape == (1, 23 * 320 - 8) and audio.shape == (1, 23 * 320)
    assert torch.equal(audio[:, -8:], torch.zeros(1, 8))
    assert (audio[:, :-8] - one_pass).abs().max() <= 1e-6 * one_pass.abs().max()
    assert decode_in_pieces(WindowedDecoder(model), codes[:, :0], [0]).shape == (1, 0)


# --------------------------------------------------------------------- misuse


def test_misuse_raises_typed_errors(model):
    with pytest.raises(UsageError, match="n_q"):
        WindowedEncoder(model, 10)
    encoder = WindowedEncoder(model, 2)
    with pytest.raises(UsageError, match="float32"):
        encoder.feed(torch.zeros(2, 100))
    with pytest.raises(UsageError, match="float32"):
        encoder.feed(torch.zeros(1, 100, dtype=torch.float64))
    encoder.finish()
    with pytest.raises(UsageError, match="after finish"):
        encoder.feed(torch.zeros(1, 100))
    decoder = WindowedDecoder(model)
    with pytest.raises(TokensError, match="0..1023"):
        decoder.feed(np.full((2, 3), 1024))
    decoder.feed(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TokensError, match="codebooks"):
        decoder.feed(np.zeros((3, 3), dtype=np.int64))


# ----------------------------------------------------------------- test model


@pytest.mark.slow
def test_building_the_test_model_leaves_the_callers_rng():
    before = torch.get_rng_state()
    model = build_test_model()
    assert torch.equal(before, torch.get_rng_state())
    assert weights_sha256(model.state_dict()).hex() == REFERENCE_SHA256["test_dac_44khz"]


def test_test_model_is_in_eval_mode_in_float32(model):
    assert not model.training and next(model.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_codes_are_diverse_on_speech(model):
    sf = pytest.importorskip("soundfile")
    torchaudio = pytest.importorskip("torchaudio")
    path = CORPUS_DIR / "real" / "speech_en_f_allison_8k.wav"
    if not path.exists():
        pytest.skip(f"corpus not found at {CORPUS_DIR}")
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    x = torchaudio.functional.resample(torch.from_numpy(audio[:, 0].copy())[None], rate, 44_100)
    encoder = WindowedEncoder(model, 4)
    codes = np.concatenate([encoder.feed(x[:, :441_000].contiguous()), encoder.finish()], axis=1)
    distinct = [len(np.unique(level)) for level in codes]
    assert min(distinct) >= 64, distinct  # measured 441, 441, 418, 420
