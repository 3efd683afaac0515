"""Several signals per model pass (LoadedModel.encode_batch, engine.encode_arrays): each
signal's codes exactly those of its own stream encoder (streaming.encode_batch's doc)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokpack.codec import engine
from tokpack.codec.threads import torch_threads
from tokpack.codecs.encodec import streaming

#: empty, one sample, a frame and its neighbours, equal lengths (rows ending together),
#: and past the first stage's first call (32,768 + 20,475 samples) on the batch
LENGTHS = [0, 1, 319, 320, 321, 321, 4_799, 24_000, 47_520, 60_000, 70_001]


def walk(n: int, seed: int) -> torch.Tensor:
    """[1, n]: a random walk (speech-like spectrum tilt), peak 0.5."""
    x = np.cumsum(np.random.default_rng(seed).standard_normal(n))
    x *= 0.5 / max(1e-9, np.abs(x).max(initial=0))
    return torch.from_numpy(x.astype(np.float32))[None]


def alone(loaded, x: torch.Tensor, n_q: int) -> np.ndarray:
    """The codes of a fresh stream encoder fed ``x`` and finished."""
    enc = loaded.stream_encoder(n_q)
    return np.concatenate([enc.feed(x), enc.finish()], axis=1)


def check_batch(loaded, signals: list, n_q: int = 32) -> None:
    """encode_batch gives every signal its own stream's codes, bit for bit (32 codebooks:
    the last ones turn the slightest difference in the embedding into other codes)."""
    got = loaded.encode_batch(signals, n_q)
    assert len(got) == len(signals)
    for x, codes in zip(signals, got):
        want = alone(loaded, x, n_q)
        assert codes.shape == want.shape == (n_q, -(-x.shape[-1] // 320))
        assert np.array_equal(codes, want), x.shape[-1]


@pytest.mark.parametrize("threads", [1, 2])
def test_encode_batch_is_each_signals_stream(test_24khz, threads):
    """Mixed lengths, given in no order: rows end at various points of the stages'
    pieces, each finishing alone from its rows of the batch's state."""
    signals = [walk(n, seed) for seed, n in enumerate(reversed(LENGTHS))]
    with torch_threads(threads), torch.inference_mode():
        check_batch(test_24khz, signals)


def test_encode_batch_of_more_signals_than_a_net_holds(test_24khz):
    """More signals than MAX_BATCH_ROWS: several nets, the results in the given order."""
    signals = [walk(n, seed) for seed, n in enumerate([700 * k for k in range(17)])]
    assert len(signals) > streaming.MAX_BATCH_ROWS
    with torch_threads(2), torch.inference_mode():
        check_batch(test_24khz, signals, n_q=8)


@pytest.mark.parametrize("threads", [pytest.param(1, marks=pytest.mark.slow), 2])  # 1: 6 s
def test_encode_batch_through_the_lstm(test_24khz, threads, monkeypatch):
    """Signals long enough for every layer, the LSTM too, to run on the batch of 3 before
    the shortest ends, then on the 2 left, whose states go on alone at their ends.
    Smaller pieces than the default's make that happen within 143,000 samples instead
    of 348,000 (speed); the reference streams use the same pieces."""
    monkeypatch.setattr(streaming, "TARGET_ELEMS", 1 << 17)
    batches = []
    lstm_call = streaming._LSTM.__call__

    def spy(self, state, x, final):
        batches.append(x.shape[0])
        return lstm_call(self, state, x, final)

    monkeypatch.setattr(streaming._LSTM, "__call__", spy)
    signals = [walk(n, seed) for seed, n in enumerate([190_000, 150_000, 190_000])]
    with torch_threads(threads), torch.inference_mode():
        check_batch(test_24khz, signals)
    assert {3, 2} <= set(batches), batches


def test_batched_lstm_runs_rows_alone(test_24khz):
    """oneDNN's LSTM rounds a batch's rows unlike batch-1 calls (the recurrent product is
    a matrix-vector one for a single signal), so the streamed LSTM calls it row by row:
    a batch's output and state are each row's own, bit for bit."""
    lstm = next(layer for layer in streaming._plan(test_24khz.model, "encoder")
                if isinstance(layer, streaming._LSTM))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, lstm.channels, 40))
                         .astype(np.float32))
    with torch.inference_mode():
        batch = lstm.new_state()
        got = [lstm(batch, x[..., :25], False), lstm(batch, x[..., 25:], False)]
        for b in range(3):
            row = lstm.new_state()
            want = [lstm(row, x[b:b + 1, :, :25], False), lstm(row, x[b:b + 1, :, 25:], False)]
            assert all(torch.equal(g[b:b + 1], w) for g, w in zip(got, want)), b
            assert all(torch.equal(g[:, b:b + 1], w) for g, w in zip(batch[0], row[0])), b


def check_arrays(loaded, items: list, **options) -> None:
    """encode_arrays gives every item encode_array's header and tokens."""
    with torch_threads(2), torch.inference_mode():
        got = engine.encode_arrays(items, loaded, **options)
    assert len(got) == len(items)
    channels = options.get("channels", "auto")
    bandwidth = options.get("bandwidth")
    for (audio, rate), enc in zip(items, got):
        want = engine.encode_array(audio, rate, loaded, bandwidth, channels=channels, threads=2)
        assert enc.header == want.header
        assert np.array_equal(enc.tokens, want.tokens), (audio.shape, rate)
        if loaded.spec.segmented:
            assert np.array_equal(enc.segment_frames, want.segment_frames)
            assert np.array_equal(enc.scales, want.scales)
        if not audio.shape[0]:
            assert enc.blocks == []


@pytest.mark.parametrize("channels", ["auto", "split"])
def test_encode_arrays_is_encode_array(test_24khz, signals, channels):
    """Mono items at several rates (resampled) and lengths, 0 frames included, and a
    stereo 44.1 kHz one: downmixed (auto) or two streams (split), in batches of 3 streams."""
    items = [(signals.noise(0), 24_000), (signals.noise(1, seed=1), 24_000),
             (signals.chirp(5_000, 24_000), 24_000), (signals.noise(7_000, seed=2), 16_000),
             (signals.sine(9_000, 44_100, channels=2), 44_100),
             (signals.noise(321, seed=3), 24_000)]
    check_arrays(test_24khz, items, channels=channels, bandwidth=24.0, batch=3)


def test_encode_arrays_segmented(test_48khz, signals):
    """The 48 kHz model (segments, scales): a stereo item over two segments, an upmixed
    mono one at 24 kHz, and an empty one."""
    items = [(signals.chirp(60_000, 48_000, channels=2), 48_000),
             (signals.noise(10_000, seed=4), 24_000), (signals.noise(0, channels=2), 48_000)]
    check_arrays(test_48khz, items)


def test_encode_arrays_refuses_an_empty_batch(test_24khz, signals):
    with pytest.raises(ValueError, match="batch"):
        engine.encode_arrays([(signals.noise(10), 24_000)], test_24khz, batch=0)
