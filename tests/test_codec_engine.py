"""encode()/decode() on the test models: framing, lengths, channels, determinism, errors."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from tokpack.codec import engine
from tokpack.codec.agreement import compare_codes
from tokpack.codec.engine import decode, encode, encode_array
from tokpack.codec.priors import default_prior
from tokpack.codecs.encodec.framing import segment_bounds
from tokpack.codec.threads import torch_threads
from tokpack.errors import AudioError, FormatError, ModelError, WeightsMismatch
from tokpack.formats import (
    ChannelMode,
    Header,
    Resampler,
    dumps,
    read_container,
    read_header,
)

LENGTHS = [0, 1, 319, 320, 321, 47519, 47520, 47521, 48000, 53760, 96000]


def assert_same_audio(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float32 rounding: error below -100 dB of the signal, 1e-5 peak."""
    assert got.shape == want.shape
    err = got.astype(np.float64) - want
    assert np.abs(err).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert 10 * np.log10(np.sum(want.astype(np.float64) ** 2) / max(np.sum(err ** 2), 1e-300)) > 100


def roundtrip(x: np.ndarray, rate: int, loaded, *, enc_kw=None, dec_kw=None, signals=None):
    """encode -> decode through memory; returns (EncodeResult, DecodeResult, container
    bytes, decoded [frames, channels], decoded rate)."""
    src = io.BytesIO()
    sf.write(src, x, rate, subtype="FLOAT", format="WAV")
    src.seek(0)
    tpk = io.BytesIO()
    er = encode(src, tpk, model=loaded, **(enc_kw or {}))
    out = io.BytesIO()
    dr = decode(io.BytesIO(tpk.getvalue()), out, model=loaded, **(dec_kw or {"subtype": "FLOAT"}))
    y, out_rate = sf.read(io.BytesIO(out.getvalue()), dtype="float32", always_2d=True)
    return er, dr, tpk.getvalue(), y, out_rate


@pytest.mark.parametrize("threads", [1, 2])
def test_codes_equal_encodecs_own_24khz(test_24khz, signals, threads):
    x = signals.chirp(24_000 + 321)
    with torch_threads(threads), torch.inference_mode():
        mine = encode_array(x, 24_000, test_24khz, 12.0).tokens
        model = test_24khz.model
        model.set_target_bandwidth(12.0)
        frames = model.encode(torch.from_numpy(x.T.copy())[None])
        (codes, scale), = frames
        assert scale is None
        assert np.array_equal(mine[0], codes[0].numpy())
        # and the decoded audio is encodec's, up to float rounding (the streamed decoder
        # sums its transposed convolutions in another order)
        want = model.decode(frames)[0, :, : x.shape[0]].numpy()
    src = signals.wav_bytes(x, 24_000)
    out = io.BytesIO()
    tpk = io.BytesIO()
    encode(src, tpk, model=test_24khz, bandwidth=12.0, threads=threads)
    decode(io.BytesIO(tpk.getvalue()), out, model=test_24khz, subtype="FLOAT", threads=threads)
    y = sf.read(io.BytesIO(out.getvalue()), dtype="float32", always_2d=True)[0]
    assert_same_audio(y.T, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_codes_and_scales_agree_with_encodecs_own_48khz(test_48khz, signals, threads):
    """The segments and their scales bit for bit (each scale is computed alone, as encodec
    does); the codes, from segments encoded in batches (other call shapes than encodec's
    one at a time), agree within the bound of docs/PERFORMANCE.md ("Determinism")."""
    x = signals.chirp(2 * 47_520 + 700, rate=48_000, channels=2) * np.array([1.0, 0.3], np.float32)
    with torch_threads(threads), torch.inference_mode():
        enc = encode_array(x, 48_000, test_48khz, 6.0)
        model = test_48khz.model
        model.set_target_bandwidth(6.0)
        signal = torch.from_numpy(x.T.copy())[None]
        frames = model.encode(signal)
        ours = [(torch.from_numpy(b.tokens.astype(np.int64)), torch.tensor(b.scales).view(1, 1))
                for b in enc.blocks]
        want = model.decode(ours)[0, :, : x.shape[0]].numpy()  # encodec's decoder, our codes
        bounds = segment_bounds(x.shape[0], 48_000, 47_520)
        assert len(enc.blocks) == len(frames) == len(bounds) == 3
        for block, (codes, scale), (offset, n) in zip(enc.blocks, frames, bounds):
            assert block.scales.tolist() == [scale.item()]
            emb = model.encoder(signal[..., offset:offset + n] / scale)
            agreement = compare_codes(model, emb, codes[0].numpy(), block.tokens[0])
            assert agreement.equal_fraction >= 0.97 and agreement.all_near_ties, agreement
    _, _, _, y, _ = roundtrip(x, 48_000, test_48khz, enc_kw={"bandwidth": 6.0, "threads": threads},
                              dec_kw={"subtype": "FLOAT", "threads": threads})
    assert_same_audio(y.T, want)


@pytest.mark.parametrize("rate", [24_000, 44_100])
def test_lengths_roundtrip_24khz(test_24khz, signals, rate):
    for n in LENGTHS:
        x = signals.noise(n, seed=n)
        er, dr, data, y, out_rate = roundtrip(x, rate, test_24khz)
        assert (y.shape, out_rate) == ((n, 1), rate), n
        c = read_container(io.BytesIO(data))
        model_samples = math.ceil(n * 24_000 / rate)
        assert c.header.source_frames == c.trailer.source_frames == n
        assert c.header.model_samples == c.trailer.model_samples == model_samples
        assert c.tokens.shape == (1, 8, math.ceil(model_samples / 320)) == (1, 8, er.token_frames)
        assert dr.frames == n and dr.sample_rate == rate


@pytest.mark.parametrize("rate", [pytest.param(48_000, marks=pytest.mark.slow), 44_100])
def test_lengths_roundtrip_48khz(test_48khz, signals, rate):
    for n in LENGTHS:
        x = signals.noise(n, channels=2, seed=n)
        er, dr, data, y, out_rate = roundtrip(x, rate, test_48khz)
        assert (y.shape, out_rate) == ((n, 2), rate), n
        c = read_container(io.BytesIO(data))
        model_samples = math.ceil(n * 48_000 / rate)
        bounds = segment_bounds(model_samples, 48_000, 47_520)
        assert c.trailer.model_samples == model_samples
        assert c.segment_frames.tolist() == [math.ceil(m / 320) for _, m in bounds]
        assert c.scales.shape == (len(bounds), 1)
        assert c.tokens.shape == (1, 4, sum(math.ceil(m / 320) for _, m in bounds))


def test_47521_samples_make_149_and_1_frames(test_48khz, signals):
    _, _, data, _, _ = roundtrip(signals.noise(47_521, channels=2), 48_000, test_48khz)
    assert read_container(io.BytesIO(data)).segment_frames.tolist() == [149, 1]


def test_header_fields(test_24khz, signals):
    x = signals.sine(4410, rate=44_100, channels=2)
    er, _, data, _, _ = roundtrip(x, 44_100, test_24khz, enc_kw={"bandwidth": 1.5})
    h = read_header(io.BytesIO(data))
    assert h == Header(
        model_id="test_24khz", weights_sha256=test_24khz.weights_sha256,
        model_sample_rate=24_000, hop_length=320, codebook_size=1024, n_codebooks=2,
        model_channels=1, source_sample_rate=44_100, source_channels=2, n_streams=1,
        channel_mode=ChannelMode.DOWNMIX, segment_length=0, segment_stride=0,
        frames_per_chunk=750, resampler=Resampler.SINC_HANN, source_frames=4410,
        model_samples=2400, version_minor=4, prior_sha256=h.prior_sha256, ctx_keyframe=6)
    assert (er.model, er.bandwidth_kbps, er.n_codebooks, er.channel_mode) == (
        "test_24khz", 1.5, 2, "downmix")
    assert er.weights_sha256 == test_24khz.weights_sha256.hex()
    # --entropy auto names the prior shipped for these weights (the uniform one if none is)
    shipped = default_prior("test_24khz", test_24khz.weights_sha256)
    assert er.prior_sha256 == h.prior_sha256.hex() == (
        shipped.sha256.hex() if shipped is not None else "0" * 64)


def test_header_fields_48khz(test_48khz, signals):
    _, _, data, _, _ = roundtrip(signals.sine(4800, rate=48_000), 48_000, test_48khz)
    h = read_header(io.BytesIO(data))
    assert (h.model_id, h.model_channels, h.channel_mode, h.segment_length, h.segment_stride,
            h.frames_per_chunk, h.resampler, h.n_codebooks) == (
        "test_48khz", 2, ChannelMode.UPMIX, 48_000, 47_520, 1500, Resampler.NONE, 4)


def test_results_report_raw_numbers(test_24khz, signals, tmp_path):
    src = signals.write(tmp_path / "in.wav", signals.sine(48_000), 24_000, subtype="PCM_16")
    er = encode(src, tmp_path / "a.tpk", model=test_24khz)
    assert er.bytes_in == src.stat().st_size
    assert er.bytes_out == (tmp_path / "a.tpk").stat().st_size
    assert er.duration_s == 2.0 and er.source_frames == 48_000
    assert er.bitrate_bps == er.bytes_out * 8 / 2.0 and er.seconds > 0
    dr = decode(tmp_path / "a.tpk", tmp_path / "b.wav", model=test_24khz)
    assert dr.bytes_in == er.bytes_out and dr.bytes_out == (tmp_path / "b.wav").stat().st_size
    assert (dr.sample_rate, dr.channels, dr.frames, dr.subtype, dr.format) == (
        24_000, 1, 48_000, "PCM_16", "WAV")
    assert dr.weights_match and dr.weights_sha256 == er.weights_sha256
    assert dr.bandwidth_kbps == 6.0 and dr.n_codebooks == 8


def test_load_by_name_and_flac_output(test_24khz, signals, tmp_path):
    src = signals.write(tmp_path / "in.wav", signals.sine(3000, rate=8000), 8000)
    encode(src, tmp_path / "a.tpk", model="test_24khz", threads=1)
    dr = decode(tmp_path / "a.tpk", tmp_path / "b.flac", subtype="PCM_24")
    info = sf.info(tmp_path / "b.flac")
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("FLAC", "PCM_24", 8000, 3000)
    assert dr.model == "test_24khz"


def test_deterministic_bytes(test_24khz, test_48khz, signals):
    """Guaranteed on every CPU: the same input, model, options and thread count give the
    same container (3 s: streamed in pieces / several batches of segments)."""
    for loaded, rate, ch in ((test_24khz, 22_050, 1), (test_48khz, 48_000, 2)):
        x = signals.chirp(3 * rate, rate=rate, channels=ch) + signals.noise(3 * rate, ch, 0.05)
        a = roundtrip(x, rate, loaded, enc_kw={"threads": 2})[2]
        b = roundtrip(x, rate, loaded, enc_kw={"threads": 2})[2]
        assert a == b


def test_threads_are_restored(test_24khz, signals):
    before = torch.get_num_threads()
    roundtrip(signals.sine(1000), 24_000, test_24khz, enc_kw={"threads": 1},
              dec_kw={"threads": 1})
    assert torch.get_num_threads() == before


def test_empty_input(test_24khz, test_48khz, corpus_dir, tmp_path, monkeypatch):
    def no_model_calls(*args, **kwargs):
        raise AssertionError("the model must not run on empty input")

    for loaded in (test_24khz, test_48khz):
        monkeypatch.setattr(loaded.model.encoder, "forward", no_model_calls)
        monkeypatch.setattr(loaded.model.decoder, "forward", no_model_calls)
        tpk = tmp_path / f"{loaded.spec.name}.tpk"
        er = encode(corpus_dir / "edge" / "empty_0_samples_24k.wav", tpk, model=loaded)
        assert (er.source_frames, er.token_frames, er.duration_s, er.bitrate_bps) == (0, 0, 0, 0.0)
        c = read_container(tpk)
        assert c.tokens.shape[2] == 0 and c.trailer.source_frames == 0
        out = tmp_path / f"{loaded.spec.name}.wav"
        dr = decode(tpk, out, model=loaded)
        info = sf.info(out)
        assert (info.frames, info.samplerate, info.channels) == (0, 24_000, 1)
        assert dr.frames == 0 and dr.bitrate_bps == 0.0


def test_split_channels(test_24khz, signals):
    x = signals.chirp(5000, rate=16_000, channels=3) * np.array([1.0, 0.5, -0.25], np.float32)
    er, dr, data, y, _ = roundtrip(x, 16_000, test_24khz, enc_kw={"channels": "split"})
    c = read_container(io.BytesIO(data))
    assert c.header.channel_mode == ChannelMode.SPLIT and c.header.n_streams == 3
    assert er.n_streams == 3 and y.shape == (5000, 3)
    for ch in range(3):  # each stream is that channel encoded alone
        alone = encode_array(x[:, ch:ch + 1], 16_000, test_24khz, 6.0)
        assert np.array_equal(c.tokens[ch], alone.tokens[0])


def test_split_on_a_stereo_model(test_48khz, signals):
    with pytest.raises(ModelError, match="needs a mono model"):
        encode(signals.wav_bytes(signals.noise(100, channels=2), 48_000), io.BytesIO(),
               model=test_48khz, channels="split")


def test_downmix_is_restored_to_all_channels(test_24khz, signals):
    x = signals.sine(3000, channels=4)
    _, _, _, y, _ = roundtrip(x, 24_000, test_24khz)
    assert y.shape == (3000, 4)
    assert all(np.array_equal(y[:, 0], y[:, c]) for c in range(4))
    _, dr, _, y, _ = roundtrip(x, 24_000, test_24khz,
                               dec_kw={"channels": "model", "subtype": "FLOAT"})
    assert y.shape == (3000, 1) and dr.channels == 1


def test_fold_and_upmix_on_the_stereo_model(test_48khz, signals):
    x = signals.sine(3000, rate=48_000, channels=6)
    _, _, data, y, _ = roundtrip(x, 48_000, test_48khz)
    assert read_header(io.BytesIO(data)).channel_mode == ChannelMode.FOLD_STEREO
    assert y.shape == (3000, 6)
    assert np.array_equal(y[:, 0], y[:, 2]) and np.array_equal(y[:, 1], y[:, 5])
    assert not np.array_equal(y[:, 0], y[:, 1])
    _, _, data, y, _ = roundtrip(signals.sine(3000, rate=48_000), 48_000, test_48khz)
    assert read_header(io.BytesIO(data)).channel_mode == ChannelMode.UPMIX
    assert y.shape == (3000, 1)


@pytest.mark.parametrize("sample_rate, want_rate, want_frames", [
    ("original", 44_100, 44_100), ("model", 24_000, 24_000), (16_000, 16_000, 16_000),
    (8_001, 8_001, 8_001),
])
def test_output_sample_rate(test_24khz, signals, sample_rate, want_rate, want_frames):
    _, dr, _, y, rate = roundtrip(signals.sine(44_100, rate=44_100), 44_100, test_24khz,
                                  dec_kw={"sample_rate": sample_rate})
    assert (rate, y.shape[0], dr.sample_rate, dr.frames) == (
        want_rate, want_frames, want_rate, want_frames)


def test_clipping_is_counted(test_24khz, signals):
    x = signals.sine(2400)
    src = signals.wav_bytes(x, 24_000)
    tpk = io.BytesIO()
    encode(src, tpk, model=test_24khz)
    loud = io.BytesIO()
    dr = decode(io.BytesIO(tpk.getvalue()), loud, model=test_24khz, subtype="FLOAT")
    y = sf.read(io.BytesIO(loud.getvalue()), dtype="float32")[0]
    pcm = io.BytesIO()
    dr16 = decode(io.BytesIO(tpk.getvalue()), pcm, model=test_24khz)
    assert dr.clipped_samples == 0
    assert dr16.clipped_samples == int(np.count_nonzero(np.abs(y) > 1))


def test_weights_mismatch(test_24khz, signals, tmp_path):
    tpk = io.BytesIO()
    encode(signals.wav_bytes(signals.sine(2000), 24_000), tpk, model=test_24khz)
    state = torch.load(test_24khz.weights_path, weights_only=True)
    state["decoder.model.0.conv.conv.bias"] += 0.5
    other = tmp_path / "other.th"
    torch.save(state, other)
    with pytest.raises(WeightsMismatch) as err:
        decode(io.BytesIO(tpk.getvalue()), io.BytesIO(), weights=other)
    from tokpack.codec.weights import weights_sha256

    theirs = weights_sha256(state).hex()[:12]
    assert test_24khz.weights_hex[:12] in str(err.value) and theirs in str(err.value)
    out = io.BytesIO()
    dr = decode(io.BytesIO(tpk.getvalue()), out, weights=other, force_weights=True)
    assert dr.weights_match is False and dr.frames == 2000


def _container(model_id: str, **changes) -> bytes:
    fields = dict(model_id=model_id, weights_sha256=bytes(32), model_sample_rate=24_000,
                  hop_length=320, codebook_size=1024, n_codebooks=2, model_channels=1,
                  source_sample_rate=24_000, source_channels=1, source_frames=320,
                  model_samples=320)
    fields.update(changes)
    return dumps(Header(**fields), np.zeros((fields["n_codebooks"], 1), np.uint16))


def test_unknown_model_in_container(tmp_path):
    path = tmp_path / "x.tpk"
    path.write_bytes(_container("encodec_96khz"))
    with pytest.raises(ModelError) as err:
        decode(path, tmp_path / "x.wav")
    assert err.value.path == str(path) and "unknown model 'encodec_96khz'" in err.value.message
    assert not (tmp_path / "x.wav").exists()


def test_header_contradicting_its_model(tmp_path):
    with pytest.raises(FormatError, match="hop_length: 640 does not match model test_24khz"):
        decode(io.BytesIO(_container("test_24khz", hop_length=640)), io.BytesIO())
    with pytest.raises(FormatError, match="n_codebooks: 40 codebooks"):
        decode(io.BytesIO(_container("test_24khz", n_codebooks=40)), io.BytesIO())


def test_bad_inputs_leave_no_output(test_24khz, signals, tmp_path):
    x = signals.noise(1000)
    x[10] = np.nan
    dst = tmp_path / "a.tpk"
    with pytest.raises(AudioError):
        encode(signals.wav_bytes(x, 24_000), dst, model=test_24khz)
    with pytest.raises(ModelError, match="no bandwidth 7 kbps"):
        encode(tmp_path / "missing.wav", dst, model="test_24khz", bandwidth=7)
    assert list(tmp_path.iterdir()) == []


def test_multi_chunk_containers(test_24khz, test_48khz, signals):
    """More than one TOKENS chunk: 750 frames (10 s) at 24 kHz, 10 segments at 48 kHz."""
    x = signals.noise(24_000 * 10 + 7000, seed=3)
    er, _, data, y, _ = roundtrip(x, 24_000, test_24khz, enc_kw={"bandwidth": 1.5})
    assert y.shape == x.shape and er.token_frames == 772
    chunks = [c.n_frames for c in engine.ContainerReader(io.BytesIO(data))]
    assert chunks == [750, 22]
    x = signals.noise(47_520 * 10 + 1000, channels=2, seed=4)
    er, _, data, y, _ = roundtrip(x, 48_000, test_48khz, enc_kw={"bandwidth": 3.0})
    assert y.shape == x.shape
    reader = engine.ContainerReader(io.BytesIO(data))
    assert [len(c.segment_frames) for c in reader] == [10, 1]


def test_lengths_from_the_trailer(test_48khz, signals):
    """A streaming writer leaves the lengths out of the header; decode takes END's."""
    import dataclasses

    from tokpack.codec.engine import write_blocks
    from tokpack.formats import ContainerWriter

    x = signals.chirp(50_000, rate=44_100, channels=2)
    enc = encode_array(x, 44_100, test_48khz)
    header = dataclasses.replace(enc.header, source_frames=None, model_samples=None)
    buf = io.BytesIO()
    with ContainerWriter(buf, header) as w:
        write_blocks(w, enc.blocks)
        w.close(source_frames=50_000, model_samples=enc.header.model_samples)
    out = io.BytesIO()
    dr = decode(io.BytesIO(buf.getvalue()), out, model=test_48khz)
    assert dr.frames == 50_000 and dr.source_frames == 50_000
    want = io.BytesIO()
    decode(io.BytesIO(dumps_of(enc)), want, model=test_48khz)
    assert out.getvalue() == want.getvalue()


def dumps_of(enc) -> bytes:
    from tokpack.codec.engine import write_blocks
    from tokpack.formats import ContainerWriter

    buf = io.BytesIO()
    with ContainerWriter(buf, enc.header) as w:
        write_blocks(w, enc.blocks)
    return buf.getvalue()
