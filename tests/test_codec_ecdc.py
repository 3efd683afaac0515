""".ecdc interop, checked with the encodec package's own functions: tokpack writes what
encodec.compress writes, encodec's reader parses it to tokpack's codes, and tokpack
decodes what encodec.compress wrote. On the test models, whose names encodec's
compress() is taught to accept (its MODELS table is only a list of names it allows)."""

from __future__ import annotations

import io
import struct
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from tokpack.codec import engine
from tokpack.codecs.encodec import streaming
from tokpack.codecs.encodec.ecdc import EcdcReader, frames_of, read_ecdc_info
from tokpack.errors import (
    BadMagic,
    FieldOutOfRange,
    FormatError,
    Truncated,
    UnsupportedFeature,
    UnsupportedVersion,
    UsageError,
)
from tokpack.formats import read_tokens


@pytest.fixture
def compress(monkeypatch, test_24khz, test_48khz):
    """encodec.compress (the module), accepting the test models' names, one torch thread;
    its decompress builds a model by name: given the test models' instances."""
    import encodec.compress  # noqa: F401  (the package's function hides the module)

    module = sys.modules["encodec.compress"]
    for loaded in (test_24khz, test_48khz):
        monkeypatch.setitem(module.MODELS, loaded.spec.name, lambda m=loaded.model: m)
        loaded.model.set_target_bandwidth(6.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)


def model_rate_audio(loaded, n: int, seed: int = 0) -> np.ndarray:
    """n frames of noisy chirp at the model's rate and channels, float32 [n, C]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / loaded.spec.sample_rate
    x = 0.4 * np.sin(2 * np.pi * (200 + 900 * t) * t)[:, None] + 0.05 * rng.standard_normal((n, 1))
    return np.repeat(x, loaded.spec.channels, axis=1).astype(np.float32)


def wav(x: np.ndarray, rate: int) -> io.BytesIO:
    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype="FLOAT", format="WAV")
    buf.seek(0)
    return buf


def tokpack_ecdc(loaded, x: np.ndarray, rate: int | None = None, **kwargs) -> bytes:
    out = io.BytesIO()
    engine.encode(wav(x, rate or loaded.spec.sample_rate), out, model=loaded, container="ecdc",
                  threads=1, **kwargs)
    return out.getvalue()


def parse_with_encodec(data: bytes):
    """(metadata, [(scale or None, codes [K, T])]) with encodec's read_ecdc_header and
    BitUnpacker, segment lengths as encodec's decompress cuts them (frame counts exact)."""
    from encodec.binary import BitUnpacker, read_ecdc_header

    from tokpack.codec.registry import get_spec

    fo = io.BytesIO(data)
    meta = read_ecdc_header(fo)
    spec = get_spec(meta["m"])
    length, k = meta["al"], meta["nc"]
    stride = spec.segment_stride or length
    segments = []
    for offset in range(0, length, stride or 1):
        n = min(length - offset, spec.segment_length or length)
        scale = struct.unpack("!f", fo.read(4))[0] if spec.segmented else None
        unpacker = BitUnpacker(10, fo)
        values = [unpacker.pull() for _ in range(k * frames_of(n, 320))]
        assert None not in values
        segments.append((scale, np.array(values).reshape(-1, k).T))
    assert fo.read() == b""
    return meta, segments


LENGTHS = [0, 1, 320, 321, 6720, 52_800]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", ["test_24khz", "test_48khz"])
def test_same_bytes_as_encodec_compress(compress, request, monkeypatch, name, n):
    """The whole pipeline gives encodec.compress's file where tokpack's encoder makes the
    calls encodec's does (a signal short enough for one call per layer; whole segments
    one at a time). 52,800 samples at 24 kHz are streamed in pieces, whose codes agree
    with encodec's only within the bound of docs/PERFORMANCE.md ("Determinism"): there
    the file must be what encodec.compress writes for tokpack's codes."""
    loaded = request.getfixturevalue(name)
    x = model_rate_audio(loaded, n)
    mine = tokpack_ecdc(loaded, x)
    if n == 0:  # encodec cannot compress nothing (it reads the codebooks of frame 0)
        assert parse_with_encodec(mine) == (
            {"m": name, "al": 0, "nc": loaded.spec.n_codebooks(6.0), "lm": False}, [])
        return
    if not loaded.spec.segmented and n >= streaming.one_call_samples(loaded.model):
        (_, codes), = parse_with_encodec(mine)[1]
        frames = [(torch.from_numpy(codes[None].astype(np.int64)), None)]
        monkeypatch.setattr(loaded.model, "encode", lambda wav: frames)
    assert mine == compress.compress(loaded.model, torch.from_numpy(x.T.copy()), use_lm=False)


@pytest.mark.parametrize("name,rate,channels", [("test_24khz", 44_100, 2),
                                                ("test_48khz", 22_050, 1)])
def test_encodec_reader_gives_the_tpk_codes(request, name, rate, channels, signals):
    """Any input (resampled, mixed): the codes encodec's reader finds in the .ecdc are the
    .tpk's, segment by segment, with the same scales."""
    loaded = request.getfixturevalue(name)
    x = signals.chirp(int(1.3 * rate), rate=rate, channels=channels)
    tpk = io.BytesIO()
    engine.encode(wav(x, rate), tpk, model=loaded, threads=1)
    meta, segments = parse_with_encodec(tokpack_ecdc(loaded, x, rate))
    model_samples = -(-x.shape[0] * loaded.spec.sample_rate // rate)
    assert meta == {"m": name, "al": model_samples, "nc": 8 if name == "test_24khz" else 4,
                    "lm": False}
    tokens = read_tokens(io.BytesIO(tpk.getvalue()))
    assert np.array_equal(np.concatenate([c for _, c in segments], axis=1), tokens)  # [K, T]
    assert len(segments) == (2 if loaded.spec.segmented else 1)


def decode_to_array(src, **kwargs) -> np.ndarray:
    out = io.BytesIO()
    engine.decode(src, out, subtype="FLOAT", **kwargs)
    out.seek(0)
    return sf.read(out, dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("name,n", [("test_24khz", 30_000), ("test_48khz", 52_800)])
def test_decodes_what_encodec_compress_wrote(compress, request, name, n):
    """tokpack decodes encodec's file to the audio of the same codes in a .tpk, and to what
    encodec's decompress makes of it (up to float rounding in the streaming decoder)."""
    loaded = request.getfixturevalue(name)
    x = model_rate_audio(loaded, n, seed=3)
    data = compress.compress(loaded.model, torch.from_numpy(x.T.copy()), use_lm=False)
    y = decode_to_array(io.BytesIO(data), model=loaded)
    assert y.shape == (n, loaded.spec.channels)
    tpk = io.BytesIO()
    engine.encode(wav(x, loaded.spec.sample_rate), tpk, model=loaded, threads=1)
    tpk.seek(0)
    assert np.array_equal(y, decode_to_array(tpk, model=loaded))
    ref, rate = compress.decompress(data)
    assert rate == loaded.spec.sample_rate
    np.testing.assert_allclose(y, ref.numpy().T, atol=2e-4)


def test_lengths_encodec_miscounts(compress, test_24khz):
    """For some lengths (6720 samples at 24 kHz) encodec's reader computes one frame more
    than its writer wrote (ceil of a float) and fails on its own file; tokpack counts
    frames exactly."""
    x = model_rate_audio(test_24khz, 6720)
    data = compress.compress(test_24khz.model, torch.from_numpy(x.T.copy()), use_lm=False)
    with pytest.raises(EOFError):
        compress.decompress(data)
    assert decode_to_array(io.BytesIO(data), model=test_24khz).shape == (6720, 1)


@pytest.mark.parametrize("name,n", [("test_24khz", 8000), ("test_48khz", 47_600)])
def test_lm_coded_round_trip(request, name, n):
    """--entropy encodec-lm: the same codes (and scales) as the bit-packed file; at 48 kHz
    a new LM run per segment (here 149 frames and 1)."""
    loaded = request.getfixturevalue(name)
    x = model_rate_audio(loaded, n, seed=4)
    packed = tokpack_ecdc(loaded, x)
    coded = tokpack_ecdc(loaded, x, coder="encodec-lm")
    assert read_ecdc_info(io.BytesIO(coded)).use_lm
    (lm_chunk,) = EcdcReader(io.BytesIO(coded))
    (packed_chunk,) = EcdcReader(io.BytesIO(packed))
    assert np.array_equal(lm_chunk.tokens, packed_chunk.tokens)
    if loaded.spec.segmented:
        assert lm_chunk.segment_frames.tolist() == [149, 1]
        assert np.array_equal(lm_chunk.scales, packed_chunk.scales)
    else:  # the audio too, once
        y = decode_to_array(io.BytesIO(coded), model=loaded)
        assert np.array_equal(y, decode_to_array(io.BytesIO(packed), model=loaded))


def test_chunks_span_the_file(test_24khz, test_48khz):
    """Long enough for several chunks: frames and segments as the .tpk reader gives them."""
    from tokpack.codecs.encodec.ecdc import EcdcWriter
    from tokpack.formats import ChannelMode

    for loaded, n, sizes in ((test_24khz, 24_000 * 21, [750, 750, 75]),
                             (test_48khz, 48_000 * 11, [1500, 167])):
        spec = loaded.spec
        head = engine.build_header(spec, bytes(32), 2, source_sample_rate=spec.sample_rate,
                                   source_channels=spec.channels, source_frames=n,
                                   channel_mode=ChannelMode.AS_IS, n_streams=1)
        out = io.BytesIO()
        with EcdcWriter(out, head) as writer:
            if not spec.segmented:
                writer.write(np.arange(2 * frames_of(n, 320)).reshape(1, 2, -1) % 1024)
            for i in range(-(-n // spec.segment_stride) if spec.segmented else 0):
                length = min(n - i * spec.segment_stride, spec.segment_length)
                writer.write_segment(np.full((1, 2, frames_of(length, 320)), i), np.array([0.5]))
        reader = EcdcReader(io.BytesIO(out.getvalue()))
        chunks = list(reader)
        assert [c.n_frames for c in chunks] == sizes
        assert [c.index for c in chunks] == list(range(len(sizes)))
        assert [c.first_frame for c in chunks] == [sum(sizes[:i]) for i in range(len(sizes))]
        assert reader.trailer.n_chunks == len(sizes) and reader.trailer.model_samples == n
        if spec.segmented:
            assert [len(c.segment_frames) for c in chunks] == [10, 2]
            assert chunks[-1].segment_frames.tolist() == [150, frames_of(n - 11 * 47_520, 320)]
            assert chunks[-1].tokens[0, :, -1].tolist() == [11, 11]
            assert chunks[-1].scales.tolist() == [[0.5], [0.5]]
        else:
            assert chunks[-1].tokens[0, 1, -1] == (2 * frames_of(n, 320) - 1) % 1024


def header(meta: bytes, version: int = 0, magic: bytes = b"ECDC") -> bytes:
    return struct.pack("!4sBI", magic, version, len(meta)) + meta


GOOD = b'{"m": "test_24khz", "al": 640, "nc": 2, "lm": false}'
MALFORMED = [
    (b"", Truncated, "offset 0, header: the 9-byte .ecdc header: data ends after 0 of 9 bytes"),
    (b"ECDC\x00\x00", Truncated, "data ends after 6 of 9 bytes"),
    (header(GOOD, magic=b"ECDX"), BadMagic,
     "offset 0, magic: not an .ecdc file (starts with b'ECDX', expected b'ECDC')"),
    (header(GOOD, version=1), UnsupportedVersion, "offset 4, version: version 1; only 0 is known"),
    (struct.pack("!4sBI", b"ECDC", 0, 1 << 30), FieldOutOfRange,
     "offset 5, metadata size: 1073741824 bytes of metadata (at most 65536)"),
    (header(GOOD)[:30], Truncated, "offset 9, metadata: the JSON metadata: data ends after 21 of 52"),
    (header(b'{"m": "test_24khz", '), FormatError, "offset 9, metadata: not JSON: "),
    (header(b"\xff\xfe"), FormatError, "offset 9, metadata: not JSON: 'utf-8' codec can't decode"),
    (header(b"[1, 2]"), FormatError, "a JSON list, not an object"),
    (header(b'{"m": "test_24khz", "al": 640, "nc": 2}'), FieldOutOfRange, "metadata 'lm': missing"),
    (header(b'{"m": "test_24khz", "al": "640", "nc": 2, "lm": false}'), FieldOutOfRange,
     "metadata 'al': '640' is not an integer"),
    (header(b'{"m": "test_24khz", "al": true, "nc": 2, "lm": false}'), FieldOutOfRange,
     "metadata 'al': True is not an integer"),
    (header(b'{"m": "encodec_96khz", "al": 640, "nc": 2, "lm": false}'), UnsupportedFeature,
     "unknown model 'encodec_96khz'; known: encodec_24khz, encodec_48khz, test_24khz, test_48khz"),
    (header(b'{"m": "test_48khz", "al": 640, "nc": 17, "lm": false}'), FieldOutOfRange,
     "metadata 'nc': 17 is out of range 1..16 for test_48khz"),
    (header(b'{"m": "test_24khz", "al": -1, "nc": 2, "lm": false}'), FieldOutOfRange,
     "metadata 'al': -1 is out of range 0..2^48"),
    # 640 samples = 2 frames x 2 codebooks x 10 bits = 5 bytes
    (header(GOOD) + b"\x01\x02\x03\x04", Truncated,
     "offset 65, codes: segment 0: data ends after 3 of 4 codes"),
    (header(GOOD) + b"\x01\x02\x03\x04\x05\x06", FormatError,
     "offset 66, codes: data after the last segment"),
    (header(b'{"m": "test_48khz", "al": 640, "nc": 2, "lm": false}') + b"\x00\x00", Truncated,
     "offset 61, scale: segment 0's scale: data ends after 2 of 4 bytes"),
    (header(b'{"m": "test_48khz", "al": 640, "nc": 2, "lm": false}') + b"\x7f\xc0\x00\x00" + bytes(5),
     FieldOutOfRange, "offset 61, scale: segment 0's scale is nan"),
]


@pytest.mark.parametrize("data,error,message", MALFORMED)
def test_malformed_files_are_typed_errors(data, error, message, test_24khz, test_48khz):
    """read_ecdc_info for the header; decode for all (a file without the magic is read as
    a .tpk container, unless it is named .ecdc: test_cli_ecdc)."""
    try:
        info = read_ecdc_info(io.BytesIO(data))
    except FormatError as exc:
        assert isinstance(exc, error) and message in str(exc)
        if not data.startswith(b"ECDC"):
            return
        info = None
    model = {"test_24khz": test_24khz, "test_48khz": test_48khz}[info.model] if info else None
    with pytest.raises(error) as err:
        decode_to_array(io.BytesIO(data), model=model)
    assert message in str(err.value)


def test_a_huge_claimed_length_costs_nothing_up_front():
    """2^48 samples claimed in 60 bytes: counted, not enumerated; the data runs out."""
    for name, chunks, frames, codes in (("test_24khz", 1_172_812_403, 879_609_302_221, "51 of 750"),
                                        ("test_48khz", 592_329_497, 888_494_244_667, "48 of 150")):
        data = header(b'{"m": "%s", "al": 281474976710656, "nc": 1, "lm": false}' % name.encode())
        reader = EcdcReader(io.BytesIO(data + bytes(64)))  # 48 kHz: a scale, then 60 bytes
        assert (reader.trailer.n_chunks, reader.trailer.total_frames) == (chunks, frames)
        with pytest.raises(Truncated, match=f"segment 0: data ends after {codes} codes"):
            next(iter(reader))


def test_totals_match_the_chunks(test_48khz):
    from tokpack.codecs.encodec.ecdc import EcdcInfo

    for n in (1, 480, 47_520, 47_999, 48_000, 48_001, 95_040, 95_520, 95_521, 200_000):
        info = EcdcInfo(test_48khz.spec, n, 1, False, 0)
        frames = list(info.segment_frames())
        assert info.totals() == (-(-len(frames) // 10), sum(frames)), n


def test_a_good_file_of_the_malformed_kind_decodes(test_24khz):
    assert decode_to_array(io.BytesIO(header(GOOD) + bytes(5)), model=test_24khz).shape == (640, 1)


def test_options_ecdc_cannot_take(test_24khz):
    x = model_rate_audio(test_24khz, 100)
    with pytest.raises(UsageError, match="--entropy zstd is for .tpk containers"):
        tokpack_ecdc(test_24khz, x, coder="zstd")
    with pytest.raises(UsageError, match="--channels split needs .tpk"):
        tokpack_ecdc(test_24khz, x, channels="split")
    with pytest.raises(UsageError, match="--salvage reads .tpk containers"):
        engine.decode(io.BytesIO(header(GOOD) + bytes(5)), io.BytesIO(), salvage=True)
