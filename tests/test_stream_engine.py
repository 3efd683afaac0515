"""encode()/decode() stream: block-size invariance, progress, pipes, late errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tokpack.codec import audio, engine
from tokpack.codec.engine import decode, encode
from tokpack.errors import AudioError
from tokpack.formats import ContainerReader, ContainerWriter, read_container


class Sink(io.RawIOBase):
    """A write-only, non-seekable stream (stdout on a pipe) that records its writes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def writable(self):
        return True

    def write(self, b):
        self.data += bytes(b)
        self.writes += 1
        return len(b)


@pytest.fixture(scope="module")
def long_tpk(test_24khz, signals):
    """14 s of 44.1 kHz stereo speech-like sound, encoded (2 TOKENS chunks)."""
    x = 0.4 * signals.chirp(14 * 44_100, rate=44_100, channels=2) \
        + signals.noise(14 * 44_100, channels=2, amp=0.03)
    tpk = io.BytesIO()
    encode(signals.wav_bytes(x, 44_100, subtype="PCM_16"), tpk, model=test_24khz)
    return x, tpk.getvalue()


def test_encode_is_independent_of_the_read_block_size(test_24khz, long_tpk, signals,
                                                      monkeypatch):
    x, data = long_tpk
    monkeypatch.setattr(audio, "READ_BLOCK_FRAMES", 4_321)
    again = io.BytesIO()
    encode(signals.wav_bytes(x, 44_100, subtype="PCM_16"), again, model=test_24khz)
    assert again.getvalue() == data


def test_decode_to_a_pipe_streams_the_same_wav(test_24khz, long_tpk, tmp_path):
    _, data = long_tpk
    for subtype in ("PCM_16", "PCM_24", "FLOAT"):
        path = tmp_path / f"y_{subtype}.wav"
        file_result = decode(io.BytesIO(data), path, model=test_24khz, subtype=subtype)
        sink = Sink()
        pipe_result = decode(io.BytesIO(data), sink, model=test_24khz, subtype=subtype)
        assert sink.writes > 2  # header, then the audio as it is decoded
        assert pipe_result.frames == file_result.frames == 14 * 44_100
        assert pipe_result.bytes_out == len(sink.data)
        if subtype != "FLOAT":  # libsndfile adds an optional PEAK chunk to FLOAT files
            assert bytes(sink.data) == path.read_bytes()
        got = sf.read(io.BytesIO(bytes(sink.data)), dtype="float32")[0]
        assert np.array_equal(got, sf.read(path, dtype="float32")[0])


def test_decode_to_a_pipe_without_lengths_in_the_header(test_24khz, long_tpk):
    """A container written to a pipe has its lengths only in END: the WAV is built
    aside, then copied out."""
    import dataclasses

    _, data = long_tpk
    c = read_container(io.BytesIO(data))
    header = dataclasses.replace(c.header, source_frames=None, model_samples=None)
    buf = io.BytesIO()
    with ContainerWriter(buf, header) as w:
        w.write(c.tokens)
        w.close(source_frames=c.trailer.source_frames, model_samples=c.trailer.model_samples)
    sink = Sink()
    decode(io.BytesIO(buf.getvalue()), sink, model=test_24khz)
    want = io.BytesIO()
    decode(io.BytesIO(data), want, model=test_24khz)
    assert bytes(sink.data) == want.getvalue()


def test_decode_yields_audio_before_the_end(test_24khz):
    """The model-rate audio of the first chunks comes out before the last is read."""
    import torch

    from tokpack.codec.engine import build_header

    header = build_header(test_24khz.spec, test_24khz.weights_sha256, 8,
                          source_sample_rate=24_000, source_channels=1,
                          source_frames=3000 * 320, channel_mode=0, n_streams=1)
    buf = io.BytesIO()
    tokens = np.random.default_rng(0).integers(0, 1024, (1, 8, 3000))
    with ContainerWriter(buf, header, coder="pack") as w:  # 4 chunks of 750 frames
        w.write(tokens)
    reader = ContainerReader(io.BytesIO(buf.getvalue()))
    seen = []

    class Counting:
        header = reader.header

        def __iter__(self):
            for chunk in reader:
                seen.append(chunk.index)
                yield chunk

        @property
        def trailer(self):
            return reader.trailer

    with torch.inference_mode():
        first = next(engine.iter_model_rate(Counting(), test_24khz))
    assert first.shape[2] > 0 and seen[-1] < 3


def test_encoder_emits_tokens_as_it_reads(test_24khz):
    """Fed 1 s blocks, the encoder holds back at most what its stages buffer (piece +
    reserve of each, in signal time), however long the input: tokens flow as audio does."""
    import torch

    from tokpack.codecs.encodec import streaming

    net = streaming.StreamedNet(streaming._plan(test_24khz.model, "encoder"))
    bound = sum((st.piece + st.reserve) * st.period for st in net.stages) / 24_000
    assert bound < 25
    pipe = engine._EncodePipeline(test_24khz, 8, 0, 1, 24_000)
    rng = np.random.default_rng(0)
    frames = 0
    with torch.inference_mode():
        for second in range(1, 41):
            block = (0.1 * rng.standard_normal((24_000, 1))).astype(np.float32)
            frames += sum(b.tokens.shape[2] for b in pipe.feed(block))
            assert second - frames / 75 <= bound
        assert frames > 0
        frames += sum(b.tokens.shape[2] for b in pipe.finish())
    assert frames == 3000


def test_a_late_nan_fails_the_file_and_leaves_nothing(test_24khz, signals, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(audio, "READ_BLOCK_FRAMES", 24_000)
    x = signals.noise(5 * 24_000)
    x[100_000] = np.nan
    src = signals.write(tmp_path / "late.wav", x, 24_000)
    with pytest.raises(AudioError) as err:
        encode(src, tmp_path / "late.tpk", model=test_24khz)
    assert str(err.value) == (f"{src}: sample is NaN at frame 100000 (4.166667 s), channel 0; "
                              "audio must be finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.wav"]


def test_a_wrong_declared_length_is_rewritten(test_24khz, signals, monkeypatch):
    """If the audio holds another length than declared, the container is written again
    with the true one (the header is never patched); a pipe cannot be rewritten."""
    real_init = audio.AudioReader.__init__

    def lying_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.info = audio.dataclasses.replace(self.info, frames=self.info.frames + 5)

    x = signals.noise(3000)
    want = io.BytesIO()
    encode(signals.wav_bytes(x, 24_000), want, model=test_24khz)
    monkeypatch.setattr(audio.AudioReader, "__init__", lying_init)
    out = io.BytesIO()
    result = encode(signals.wav_bytes(x, 24_000), out, model=test_24khz)
    assert out.getvalue() == want.getvalue() and result.source_frames == 3000
    with pytest.raises(AudioError, match="holds 3000 frames but declares 3005"):
        encode(signals.wav_bytes(x, 24_000), Sink(), model=test_24khz)
