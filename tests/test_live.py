"""Live mode (issue 17): encode_live / decode(live=True), raw PCM and WAV on pipes, the
CLI's `encode --live | decode --live`, and what happens when the stream misbehaves.
Latency itself is measured by scripts/bench_live.py, not here."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from tokpack.codec.engine import decode, encode
from tokpack.codec.live import encode_live, packet_frames
from tokpack.codec.audio import wav_header
from tokpack.codec.liveio import PipeReader, raw_format
from tokpack.errors import AudioError, UsageError
from tokpack.formats import read_container

TOKPACK = [sys.executable, "-m", "tokpack"]


def pcm16(x: np.ndarray) -> bytes:
    return np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def stream_wav(x: np.ndarray, rate: int) -> bytes:
    """A WAV as a tool writes it to a pipe: 16-bit, length unknown in the header."""
    return wav_header(rate, x.shape[1], "PCM_16", None) + pcm16(x)


def offline_tokens(data: bytes, model) -> np.ndarray:
    out = io.BytesIO()
    encode(io.BytesIO(data), out, model=model)
    return read_container(io.BytesIO(out.getvalue())).tokens


def live_container(data: bytes, model, **kw) -> bytes:
    out = io.BytesIO()
    encode_live(io.BytesIO(data), out, model=model, **kw)
    return out.getvalue()


@pytest.mark.parametrize("n", [0, 1, 319, 320, 321, 4799, 24_000 + 7])
def test_live_codes_equal_offline_and_lengths_are_exact(test_24khz, signals, n):
    x = signals.chirp(n, 24_000)
    wav = io.BytesIO()
    sf.write(wav, x, 24_000, subtype="PCM_16", format="WAV")
    data = live_container(stream_wav(x, 24_000), test_24khz)
    live = read_container(io.BytesIO(data))
    assert live.header.version_minor == 4 and live.header.frames_per_chunk == 3
    assert live.trailer.source_frames == n
    want = offline_tokens(wav.getvalue(), test_24khz)
    assert live.tokens.shape == want.shape
    if n:
        assert (live.tokens == want).mean() >= 0.97
    for live_decode in (True, False):
        out = io.BytesIO()
        r = decode(io.BytesIO(data), out, live=live_decode, model=test_24khz)
        y, rate = sf.read(io.BytesIO(out.getvalue()), always_2d=True)
        assert (r.frames, y.shape, rate) == (n, (n, 1), 24_000)


def test_resampled_multichannel_input_and_mimi(test_24khz, test_mimi, signals):
    """44.1 kHz stereo downmixed and resampled live; Mimi's 80 ms frames make 1-frame packets."""
    x = signals.chirp(44_100 + 333, 44_100, 2)
    for model in (test_24khz, test_mimi):
        data = live_container(stream_wav(x, 44_100), model)
        c = read_container(io.BytesIO(data))
        assert c.header.frames_per_chunk == packet_frames(model.spec)
        wav = io.BytesIO()
        sf.write(wav, x, 44_100, subtype="PCM_16", format="WAV")
        assert (c.tokens == offline_tokens(wav.getvalue(), model)).mean() >= 0.97
        out = io.BytesIO()
        decode(io.BytesIO(data), out, live=True, model=model)
        y, rate = sf.read(io.BytesIO(out.getvalue()), always_2d=True)
        assert y.shape == x.shape and rate == 44_100
    assert packet_frames(test_mimi.spec) == 1 and packet_frames(test_24khz.spec, 20) == 2


def test_raw_input_and_output(test_24khz, signals, tmp_path):
    x = signals.chirp(12_345, 16_000, 2)
    data = live_container(pcm16(x), test_24khz, raw=raw_format(16_000, 2), channels="split")
    c = read_container(io.BytesIO(data))
    assert (c.header.source_sample_rate, c.header.n_streams, c.trailer.source_frames) == (16_000, 2, 12_345)
    out = tmp_path / "y.raw"
    decode(io.BytesIO(data), out, live=True, model=test_24khz)
    assert out.stat().st_size == 12_345 * 2 * 2
    # non-live encode reads raw PCM too
    offline = io.BytesIO()
    encode(io.BytesIO(pcm16(x)), offline, model=test_24khz, raw=raw_format(16_000, 2), channels="split")
    assert read_container(io.BytesIO(offline.getvalue())).trailer.source_frames == 12_345


def test_non_causal_models_refuse_live(signals):
    for model in ("test_48khz", "test_dac_44khz"):
        with pytest.raises(UsageError, match="cannot run live"):
            encode_live(io.BytesIO(stream_wav(signals.chirp(100, 48_000, 2), 48_000)), io.BytesIO(),
                        model=model)


# --- the pipe reader ----------------------------------------------------------------


def _wav(fmt_body: bytes, data: bytes, *, extra: bytes = b"", data_size: int | None = None) -> bytes:
    size = len(data) if data_size is None else data_size
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + extra + b"fmt "
            + struct.pack("<I", len(fmt_body)) + fmt_body + b"data" + struct.pack("<I", size) + data)


class Trickle(io.RawIOBase):
    """A pipe that hands over a few bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        part = self.data[self.at:self.at + min(n, self.step)]
        self.at += len(part)
        return part

    read = read1


def test_pipe_reader_formats_and_odd_chunks():
    x = np.array([[0.5, -0.25], [-1.0, 0.75], [0.125, 0.0]], np.float32)
    cases = {
        "16-bit": (struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16), pcm16(x), 1 / 32768),
        "24-bit": (struct.pack("<HHIIHH", 1, 2, 8000, 48000, 6, 24),
                   b"".join(int(round(v * 2**23)).to_bytes(4, "little", signed=True)[:3]
                            for v in np.clip(x, -1, 1 - 2**-23).ravel()), 2**-22),
        "float extensible": (struct.pack("<HHIIHHHHI", 0xFFFE, 2, 8000, 64000, 8, 32, 22, 32, 3)
                             + b"\x03\x00" + bytes(14), x.astype("<f4").tobytes(), 0),
    }
    for name, (fmt, data, tol) in cases.items():
        # an odd-sized chunk before fmt (padded), a known data size, and a chunk after the data
        wav = _wav(fmt, data, extra=b"LIST\x03\x00\x00\x00abc\x00", data_size=len(data)) + b"JUNK"
        reader = PipeReader(Trickle(wav, 5), name)
        got = np.concatenate(list(reader.blocks()))
        assert reader.fmt.sample_rate == 8000 and got.shape == (3, 2), name
        assert np.abs(got - x).max() <= tol, name
    with pytest.raises(AudioError, match="neither"):
        PipeReader(io.BytesIO(b"fLaC" + bytes(40)), "x")
    with pytest.raises(AudioError, match="before its fmt"):
        PipeReader(io.BytesIO(b"RIFF\0\0\0\0WAVEdata\0\0\0\0"), "x")
    with pytest.raises(AudioError, match="ends in its"):
        PipeReader(io.BytesIO(b"RIFF\0\0\0\0WA"), "x")
    nan = _wav(cases["float extensible"][0], np.full(4, np.nan, "<f4").tobytes())
    with pytest.raises(AudioError, match="NaN"):
        list(PipeReader(io.BytesIO(nan), "x").blocks())


def test_streamed_wav_output_is_readable(test_24khz, signals, tmp_path):
    """decode --live to a pipe: a WAV header with unknown sizes; soundfile reads it to its end."""
    data = live_container(stream_wav(signals.chirp(5_000, 24_000), 24_000), test_24khz)
    r, w = os.pipe()
    sink = io.BytesIO()
    reader = threading.Thread(target=lambda: sink.write(os.fdopen(r, "rb").read()))
    reader.start()
    with os.fdopen(w, "wb") as out:
        decode(io.BytesIO(data), out, live=True, model=test_24khz)
    reader.join()
    assert sink.getvalue()[4:8] == b"\xff\xff\xff\xff"
    path = tmp_path / "streamed.wav"
    path.write_bytes(sink.getvalue())
    y, rate = sf.read(path)
    assert (len(y), rate) == (5_000, 24_000)


# --- the commands, on pipes ----------------------------------------------------------


def _reader(f, sink: bytearray, times: list) -> threading.Thread:
    def run():
        while chunk := os.read(f.fileno(), 1 << 16):
            sink.extend(chunk)
            times.append(time.perf_counter())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_cli_pipe_streams_through_a_stalled_reader_and_a_pause(test_24khz, signals):
    """encode --live | decode --live --raw: a reader that stalls (the decoder blocks on its
    full pipe), then audio that comes out while the input is still open, a 2 s pause in the
    input, and exactly as many samples out as went in."""
    x = signals.chirp(4 * 24_000 + 77, 24_000)
    enc = subprocess.Popen([*TOKPACK, "encode", "--live", "-", "-c", "-q", "-m", "test_24khz"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    dec = subprocess.Popen([*TOKPACK, "decode", "--live", "-", "-c", "-q", "--raw"],
                           stdin=enc.stdout, stdout=subprocess.PIPE)
    enc.stdout.close()
    enc.stdin.write(stream_wav(x[:3 * 24_000], 24_000))  # 144 kB of output: more than a pipe holds
    enc.stdin.flush()
    time.sleep(6)  # nobody reads: the decoder blocks on its output, the encoder does not care
    out, times = bytearray(), []
    t = _reader(dec.stdout, out, times)
    deadline = time.time() + 60
    while len(out) < 2 * 2 * 24_000 and time.time() < deadline:
        time.sleep(0.05)
    assert len(out) >= 2 * 2 * 24_000  # two seconds out, the input still open
    time.sleep(2)
    enc.stdin.write(pcm16(x[3 * 24_000:]))
    enc.stdin.close()
    assert enc.wait(60) == 0 and dec.wait(60) == 0
    t.join(10)
    assert len(np.frombuffer(bytes(out), "<i2")) == len(x)


def test_ctrl_c_completes_the_container(test_24khz, signals, tmp_path):
    """SIGINT ends a live recording like the end of its input: a complete container."""
    out = tmp_path / "rec.tpk"
    enc = subprocess.Popen([*TOKPACK, "encode", "--live", "-", "-o", str(out), "-q", "-m", "test_24khz"],
                           stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    enc.stdin.write(stream_wav(signals.chirp(24_000 + 5, 24_000), 24_000))
    enc.stdin.flush()
    deadline = time.time() + 60  # until most of the second is coded into the temporary file
    while time.time() < deadline and not any(t.stat().st_size > 1000 for t in tmp_path.glob(".rec.tpk.*")):
        time.sleep(0.05)
    time.sleep(0.5)
    enc.send_signal(signal.SIGINT)
    assert enc.wait(60) == 0, enc.stderr.read()
    c = read_container(out)
    assert c.trailer.source_frames == 24_005
    enc.stdin.close()


def test_a_killed_encoder_leaves_complete_chunks_for_salvage(test_24khz, signals, tmp_path):
    enc = subprocess.Popen([*TOKPACK, "encode", "--live", "-", "-c", "-q", "-m", "test_24khz"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    got, times = bytearray(), []
    t = _reader(enc.stdout, got, times)
    enc.stdin.write(stream_wav(signals.chirp(24_000, 24_000), 24_000))
    enc.stdin.flush()
    deadline = time.time() + 60
    while len(got) < 1000 and time.time() < deadline:
        time.sleep(0.05)
    enc.kill()
    enc.wait()
    t.join(10)
    path = tmp_path / "cut.tpk"
    path.write_bytes(bytes(got))
    run = subprocess.run([*TOKPACK, "decode", "--live", str(path), "-o", str(tmp_path / "a.wav")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "Truncated" not in run.stderr and len(run.stderr.splitlines()) == 1
    run = subprocess.run([*TOKPACK, "decode", "--salvage", "-q", str(path), "-o", str(tmp_path / "b.wav")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sf.info(tmp_path / "b.wav").frames > 0


def test_cli_usage_errors(tmp_path):
    for args in (["encode", "--live", "a.wav", "b.wav", "-c"], ["encode", "--raw-rate", "8000", "-", "-c"],
                 ["encode", "--live", "-", "-c", "-m", "test_48khz"], ["decode", "--live", "-t", "x.tpk"],
                 ["encode", "--live", "-", "-c", "--packet", "0"]):
        run = subprocess.run([*TOKPACK, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert run.returncode == 2, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (args, run.stderr)


@pytest.mark.parametrize("threads", [1, 2])
def test_kept_codebook_norms_give_encodecs_codes(test_24khz, threads):
    """The streamed encoders' quantizer (codebook norms kept) is encodec's vq.encode, bit for bit."""
    import torch

    from tokpack.codec.threads import torch_threads
    from tokpack.codecs.encodec.streaming import _quantizer

    model = test_24khz.model
    with torch_threads(threads), torch.inference_mode():
        for frames in (1, 2, 3, 151):
            emb = model.encoder(torch.from_numpy(np.random.default_rng(frames).standard_normal(
                (1, 1, 320 * frames)).astype(np.float32) * 0.1))
            for n_q in (1, 8, 32):
                want = model.quantizer.vq.encode(emb, n_q=n_q)[:, 0]
                assert torch.equal(_quantizer(model).encode(emb, n_q), want), (frames, n_q)


def test_decode_raw_names_its_output_raw(test_24khz, signals, tmp_path):
    tpk = tmp_path / "x.tpk"
    tpk.write_bytes(live_container(stream_wav(signals.chirp(3_000, 24_000), 24_000), test_24khz))
    run = subprocess.run([*TOKPACK, "decode", "--raw", "-q", str(tpk)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "x.out.raw").stat().st_size == 3_000 * 2


def test_pipe_reader_reads_the_corpus_wavs_as_libsndfile_does(corpus_dir):
    """Every RIFF WAV of the corpus (PCM 8-32 bit, float, double, EXTENSIBLE, LIST chunks,
    1/2/6 channels, 8-96 kHz) reads bit for bit as libsndfile reads it; what a pipe reader
    cannot parse (AIFF, RIFX, RF64, FLAC, Ogg, u-law) is one AudioError."""
    paths = sorted((corpus_dir / "variants").iterdir()) + sorted((corpus_dir / "real").glob("*.wav"))
    refused = set()
    for path in paths:
        try:
            reader = PipeReader(Trickle(path.read_bytes(), 4093), str(path))
        except AudioError:
            refused.add(path.name)
            continue
        got = np.concatenate(list(reader.blocks()))
        want, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == reader.fmt.sample_rate and np.array_equal(got, want), path.name
    assert refused == {"bigendian_aiff_pcm16_8k.aiff", "bigendian_rifx_pcm16_8k.wav", "rf64_pcm16_8k.wav",
                       "gnome_startup3_44k_stereo.flac", "gnome_startup3_44k_stereo.ogg", "ulaw_8k.wav"}
