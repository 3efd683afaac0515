"""Audio I/O, channel rules and the pinned resampler (no model)."""

from __future__ import annotations

import errno
import io
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from tokpack.codec import audio
from tokpack.codec.channels import from_streams, plan_channels, to_streams
from tokpack.errors import AudioError, ModelError, OutputError
from tokpack.formats import ChannelMode


class Pipe(io.RawIOBase):
    """A read-only, non-seekable stream, like stdin on a pipe."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        chunk = self._buf.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_read_path_bytesio_and_pipe_agree(signals, tmp_path):
    x = signals.noise(1000, channels=2)
    path = signals.write(tmp_path / "a.wav", x, 16_000)
    data, info = audio.read_audio(path)
    assert info == audio.AudioInfo(16_000, 2, 1000, "WAV", "FLOAT", path.stat().st_size)
    assert data.dtype == np.float32 and np.array_equal(data, x)
    raw = path.read_bytes()
    from_bytes, _ = audio.read_audio(io.BytesIO(raw))
    from_pipe, pipe_info = audio.read_audio(Pipe(raw))
    assert np.array_equal(from_bytes, x) and np.array_equal(from_pipe, x)
    assert pipe_info.bytes == len(raw)


def test_read_in_blocks(signals, monkeypatch):
    monkeypatch.setattr(audio, "READ_BLOCK_FRAMES", 300)
    x = signals.noise(1000)
    data, info = audio.read_audio(signals.wav_bytes(x, 8000))
    assert info.frames == 1000 and np.array_equal(data, x)


@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "+inf"), (-np.inf, "-inf")])
def test_non_finite_samples(signals, value, kind, monkeypatch):
    monkeypatch.setattr(audio, "READ_BLOCK_FRAMES", 1000)  # the bad one is in block 3
    x = signals.noise(4000, channels=2)
    x[2400, 1] = value
    with pytest.raises(AudioError) as err:
        audio.read_audio(signals.wav_bytes(x, 8000), name="in.wav")
    assert str(err.value) == (f"in.wav: sample is {kind} at frame 2400 (0.300000 s), channel 1; "
                              "audio must be finite")


def test_corpus_nan_inf_file(corpus_dir):
    path = corpus_dir / "edge" / "nan_inf_float_24k.wav"
    with pytest.raises(AudioError) as err:
        audio.read_audio(path)
    assert err.value.path == str(path)
    assert "NaN at frame 1000 (0.041667 s)" in err.value.message


@pytest.mark.parametrize("name, reason", [
    ("zero_bytes.wav", "Format not recognised"),
    ("text_renamed.wav", "Format not recognised"),
    ("random_bytes.wav", "Format not recognised"),
    ("bad_fmt_chunk.wav", "Malformed 'fmt ' chunk"),
])
def test_unreadable_files(corpus_dir, name, reason):
    path = corpus_dir / "malformed" / name
    with pytest.raises(AudioError) as err:
        audio.read_audio(path)
    assert err.value.path == str(path)
    assert reason in err.value.message and "\n" not in err.value.message


def test_missing_file(tmp_path):
    with pytest.raises(AudioError) as err:
        audio.read_audio(tmp_path / "nope.wav")
    assert str(err.value) == f"{tmp_path / 'nope.wav'}: cannot open: No such file or directory"


def test_empty_file_reads_as_zero_frames(corpus_dir):
    data, info = audio.read_audio(corpus_dir / "edge" / "empty_0_samples_24k.wav")
    assert data.shape == (0, 1) and info.frames == 0 and info.sample_rate == 24_000


@pytest.mark.parametrize("n, orig, new", [
    (1, 44100, 24000), (319, 44100, 24000), (47521, 44100, 48000), (12345, 8000, 24000),
    (96000, 96000, 48000), (7, 22050, 24000), (100, 24000, 44100), (0, 44100, 24000),
])
def test_resample_length(n, orig, new):
    x = torch.zeros(2, n)
    y = audio.resample(x, orig, new)
    assert y.shape == (2, math.ceil(n * new / orig)) == (2, audio.resampled_length(n, orig, new))


def test_resample_is_the_pinned_method():
    import torchaudio.functional as F

    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 5000)).astype(np.float32))
    want = F.resample(x, 44100, 24000, lowpass_filter_width=6, rolloff=0.99,
                      resampling_method="sinc_interp_hann")
    assert torch.equal(audio.resample(x, 44100, 24000), want)
    assert audio.resample(x, 24000, 24000) is x


@pytest.mark.parametrize("model_ch, src_ch, request_, mode, streams", [
    (1, 1, "auto", ChannelMode.AS_IS, 1),
    (1, 2, "auto", ChannelMode.DOWNMIX, 1),
    (1, 6, "auto", ChannelMode.DOWNMIX, 1),
    (1, 6, "split", ChannelMode.SPLIT, 6),
    (1, 1, "split", ChannelMode.AS_IS, 1),
    (2, 1, "auto", ChannelMode.UPMIX, 1),
    (2, 2, "auto", ChannelMode.AS_IS, 1),
    (2, 6, "auto", ChannelMode.FOLD_STEREO, 1),
])
def test_plan_channels(model_ch, src_ch, request_, mode, streams):
    assert plan_channels(model_ch, src_ch, request_) == (mode, streams)


def test_split_needs_a_mono_model():
    with pytest.raises(ModelError, match="needs a mono model; test_48khz has 2 channels"):
        plan_channels(2, 2, "split", "test_48khz")
    with pytest.raises(ValueError):
        plan_channels(1, 2, "mono")


def test_channel_maps():
    x = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)  # 5 frames, 6 channels
    down = to_streams(x, ChannelMode.DOWNMIX, 1)
    assert down.shape == (1, 1, 5) and np.allclose(down[0, 0], x.mean(axis=1))
    split = to_streams(x, ChannelMode.SPLIT, 1)
    assert split.shape == (6, 1, 5) and np.array_equal(split[:, 0].T, x)
    fold = to_streams(x, ChannelMode.FOLD_STEREO, 2)
    assert np.allclose(fold[0, 0], x[:, [0, 2, 4]].mean(axis=1))
    assert np.allclose(fold[0, 1], x[:, [1, 3, 5]].mean(axis=1))
    up = to_streams(x[:, :1], ChannelMode.UPMIX, 2)
    assert up.shape == (1, 2, 5) and np.array_equal(up[0, 0], up[0, 1])
    # back to the source layout
    assert np.array_equal(from_streams(split, ChannelMode.SPLIT, 6), x)
    back = from_streams(fold, ChannelMode.FOLD_STEREO, 6)
    assert back.shape == (5, 6)
    assert np.array_equal(back[:, 4], fold[0, 0]) and np.array_equal(back[:, 5], fold[0, 1])
    assert np.array_equal(from_streams(down, ChannelMode.DOWNMIX, 6),
                          np.repeat(down[0, 0][:, None], 6, axis=1))
    assert from_streams(up, ChannelMode.UPMIX, 1).shape == (5, 1)
    assert from_streams(fold, ChannelMode.FOLD_STEREO, 6, restore=False).shape == (5, 2)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_write_formats_and_clipping(tmp_path, subtype, ext):
    x = np.array([[0.5, -0.25], [1.5, -2.0], [1.0, 0.0]], dtype=np.float32)
    path = tmp_path / f"out{ext}"
    if ext == ".flac" and subtype == "FLOAT":
        with pytest.raises(AudioError, match="FLAC cannot store FLOAT"):
            audio.write_audio(path, x, 8000, subtype=subtype)
        assert not path.exists()
        return
    result = audio.write_audio(path, x, 8000, subtype=subtype)
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        ext[1:].upper(), subtype, 8000, 2, 3)
    assert result.bytes == path.stat().st_size
    assert result.clipped_samples == (0 if subtype == "FLOAT" else 2)
    y, _ = sf.read(path, dtype="float32")
    assert np.allclose(y, x if subtype == "FLOAT" else np.clip(x, -1, 1), atol=1e-4)


def test_write_to_file_objects(signals):
    x = signals.noise(100, channels=2)
    buf = io.BytesIO()
    result = audio.write_audio(buf, x, 8000, subtype="FLOAT")
    assert result.bytes == len(buf.getvalue())
    assert np.array_equal(sf.read(io.BytesIO(buf.getvalue()), dtype="float32")[0], x)

    class Sink(io.RawIOBase):  # a pipe: write-only, no seeking
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

    sink = Sink()
    audio.write_audio(sink, x, 8000, subtype="FLOAT")
    assert bytes(sink.data) == buf.getvalue()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_full_device_is_one_output_error(signals):
    """libsndfile writes through Python callbacks: a write failing in one must come out as
    an OutputError naming the output, not as 'Exception ignored' noise (an unraisable
    exception, here a test error) and libsndfile's vague "System error"."""

    class Full(io.BytesIO):  # a device with room for 1000 bytes
        name = "full.wav"

        def write(self, b):
            if self.tell() + len(b) > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(b)

    with pytest.raises(OutputError) as caught:
        audio.write_audio(Full(), signals.noise(8000), 8000)
    assert str(caught.value) == "full.wav: cannot write: No space left on device"


def test_write_empty_and_bad_extension(tmp_path):
    result = audio.write_audio(tmp_path / "e.wav", np.zeros((0, 3), np.float32), 44100)
    assert sf.info(tmp_path / "e.wav").frames == 0 and result.channels == 3
    with pytest.raises(AudioError, match="extension '.mp3'"):
        audio.write_audio(tmp_path / "x.mp3", np.zeros((1, 1), np.float32), 8000)
    with pytest.raises(AudioError, match="unsupported subtype"):
        audio.write_audio(tmp_path / "x.wav", np.zeros((1, 1), np.float32), 8000, subtype="PCM_8")
