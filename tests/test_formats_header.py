"""Header: validation on construction, bytes round trip, and typed errors for bad bytes."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokpack.errors import (
    BadMagic,
    ChecksumMismatch,
    FieldOutOfRange,
    Truncated,
    UnsupportedVersion,
)
from tokpack.formats import MAGIC, ChannelMode, Header, Resampler, spec
from tokpack.formats.header import check_prefix


def make_header(**fields) -> Header:
    base = dict(
        model_id="encodec_24khz",
        weights_sha256=bytes(range(32)),
        model_sample_rate=24_000,
        hop_length=320,
        codebook_size=1024,
        n_codebooks=8,
        model_channels=1,
        source_sample_rate=24_000,
        source_channels=1,
    )
    return Header(**{**base, **fields})


def patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    """``data`` with one field replaced and the header CRC recomputed."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    size = struct.unpack_from("<H", out, 10)[0]
    struct.pack_into("<I", out, size - 4, zlib.crc32(out[: size - 4]))
    return bytes(out)


def test_layout_matches_spec_table():
    assert struct.calcsize(spec.HEADER_STRUCT) == spec.HEADER_FIELDS_SIZE == 132
    assert spec.HEADER_SIZE == 136
    ends = [offset + struct.calcsize("<" + code) for _, offset, code in spec.HEADER_FIELDS]
    assert [offset for _, offset, _ in spec.HEADER_FIELDS[1:]] == ends[:-1]
    assert bytes.fromhex("89 54 50 4B 0D 0A 1A 0A") == MAGIC


def test_properties_of_the_24khz_model():
    header = make_header()
    assert header.frame_rate == 75.0
    assert header.bits_per_code == 10
    assert header.bandwidth_bps == 6000.0
    assert not header.segmented and header.segment_frames == 0
    assert header.source_duration_s is None
    assert make_header(source_frames=48_000).source_duration_s == 2.0
    assert make_header(codebook_size=1000).bits_per_code == 10
    assert make_header(codebook_size=2048).bits_per_code == 11
    assert make_header(codebook_size=2).bits_per_code == 1
    assert make_header(codebook_size=65_536).bits_per_code == 16


def test_properties_of_the_48khz_model():
    header = make_header(
        model_sample_rate=48_000,
        source_sample_rate=48_000,
        n_codebooks=4,
        model_channels=2,
        source_channels=2,
        segment_length=48_000,
        segment_stride=47_520,
        frames_per_chunk=750,
    )
    assert header.segmented and header.segment_frames == 150 and header.segments_per_chunk == 5
    assert header.bandwidth_bps == 6000.0


def test_round_trip_with_unknown_lengths():
    header = make_header(
        source_sample_rate=44_100,
        source_channels=3,
        n_streams=3,
        channel_mode=ChannelMode.SPLIT,
        resampler=Resampler.SINC_HANN,
    )
    data = header.to_bytes()
    assert len(data) == 136
    assert data[116:132] == b"\xff" * 16
    assert Header.from_bytes(data + b"trailing bytes are not the header's business") == header


@given(
    source_frames=st.none() | st.integers(0, 2**48),
    model_samples=st.none() | st.integers(0, 2**48),
    model_id=st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=32),
    minor=st.integers(0, 255),
)
def test_round_trip_property(source_frames, model_samples, model_id, minor):
    if source_frames is not None and model_samples is not None:
        source_frames = min(source_frames, model_samples + 1)  # the rates are equal
    header = make_header(
        source_frames=source_frames,
        model_samples=model_samples,
        model_id=model_id,
        version_minor=minor,
    )
    assert Header.from_bytes(header.to_bytes()) == header


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (dict(model_id=""), "model_id"),
        (dict(model_id="x" * 33), "model_id"),
        (dict(model_id="EnCodec"), "model_id"),
        (dict(model_id="modèle"), "model_id"),
        (dict(weights_sha256=b"short"), "weights_sha256"),
        (dict(source_frames=1002, model_samples=1000), "source_frames"),
        (dict(source_frames=2003, model_samples=1000, source_sample_rate=48_000,
              resampler=spec.Resampler.SINC_HANN), "source_frames"),
        (dict(n_codebooks=64, frames_per_chunk=32_769), "frames_per_chunk"),
        (dict(model_sample_rate=0), "model_sample_rate"),
        (dict(model_sample_rate=768_001, source_sample_rate=768_001), "model_sample_rate"),
        (dict(hop_length=65_537), "hop_length"),
        (dict(codebook_size=1), "codebook_size"),
        (dict(codebook_size=65_537), "codebook_size"),
        (dict(n_codebooks=0), "n_codebooks"),
        (dict(n_codebooks=65), "n_codebooks"),
        (dict(model_channels=9), "model_channels"),
        (dict(n_streams=65), "n_streams"),
        (dict(channel_mode=5), "channel_mode"),
        (dict(frames_per_chunk=0), "frames_per_chunk"),
        (dict(frames_per_chunk=65_536), "frames_per_chunk"),
        (dict(resampler=2), "resampler"),
        (dict(source_channels=0), "source_channels"),
        (dict(source_channels=1025), "source_channels"),
        (dict(source_frames=2**48 + 1), "source_frames"),
        (dict(model_samples=-1), "model_samples"),
        (dict(n_codebooks=8.0), "n_codebooks"),
        (dict(n_codebooks=True), "n_codebooks"),
        # consistency rules
        (dict(source_channels=2), "channel_mode"),
        (dict(n_streams=2), "channel_mode"),
        (
            dict(channel_mode=ChannelMode.DOWNMIX, model_channels=2, source_channels=2),
            "channel_mode",
        ),
        (dict(channel_mode=ChannelMode.UPMIX, model_channels=2, source_channels=2), "channel_mode"),
        (dict(channel_mode=ChannelMode.SPLIT, source_channels=3, n_streams=2), "channel_mode"),
        (
            dict(channel_mode=ChannelMode.FOLD_STEREO, model_channels=2, source_channels=1),
            "channel_mode",
        ),
        (dict(resampler=Resampler.SINC_HANN), "resampler"),
        (dict(source_sample_rate=44_100), "resampler"),
        (dict(segment_stride=10), "segment_stride"),
        (dict(segment_length=48_000, segment_stride=0), "segment_stride"),
        (dict(segment_length=48_000, segment_stride=48_001), "segment_stride"),
        (
            dict(segment_length=48_000, segment_stride=47_520, frames_per_chunk=700),
            "frames_per_chunk",
        ),
    ],
)
def test_invalid_headers_cannot_be_built(fields, field):
    with pytest.raises(FieldOutOfRange) as info:
        make_header(**fields)
    assert info.value.field == field
    assert info.value.offset == spec.HEADER_OFFSET[field]


@pytest.mark.parametrize(
    "fields",
    [
        dict(channel_mode=ChannelMode.DOWNMIX, source_channels=6),
        dict(channel_mode=ChannelMode.UPMIX, model_channels=2),
        dict(channel_mode=ChannelMode.SPLIT, source_channels=64, n_streams=64),
        dict(channel_mode=ChannelMode.FOLD_STEREO, model_channels=2, source_channels=5),
        dict(segment_length=48_000, segment_stride=48_000, frames_per_chunk=150),
    ],
)
def test_valid_channel_and_segment_layouts(fields):
    header = make_header(**fields)
    assert Header.from_bytes(header.to_bytes()) == header


def test_replace_revalidates():
    with pytest.raises(FieldOutOfRange):
        dataclasses.replace(make_header(), n_codebooks=0)


def test_bad_magic_message_names_the_bytes():
    with pytest.raises(BadMagic) as info:
        Header.from_bytes(b"MThd\x24\x08\x00\x00WAVEfmt " + bytes(200), path="song.mid")
    message = str(info.value)
    assert message.startswith("song.mid: offset 0, magic: not a tokpack container")
    assert "expected 89 54 50 4B 0D 0A 1A 0A, got 4D 54 68 64 24 08 00 00" in message


@pytest.mark.parametrize("start, what", [
    (b"RIFF\x24\x08\x00\x00WAVE", "a WAV file"), (b"RF64\xff\xff\xff\xffWAVE", "an RF64 WAV file"),
    (b"fLaC\x00\x00\x00\x22", "a FLAC file"), (b"OggS\x00\x02\x00\x00", "an Ogg file"),
    (b"FORM\x00\x00\x10\x00AIFF", "an AIFF file"), (b"ID3\x04\x00\x00\x00\x00", "an MP3 file"),
])
def test_audio_given_by_mistake_is_named(start, what):
    with pytest.raises(BadMagic) as info:
        Header.from_bytes(start + bytes(200), path="x")
    assert str(info.value) == (f"x: offset 0, magic: this looks like {what}, not a token "
                               f"container: did you mean `tokpack encode`?")


def test_a_prior_given_as_a_container_is_named():
    with pytest.raises(BadMagic, match="this looks like a CTX prior \\(.tpp\\), not a token "
                                       "container: give it to --prior"):
        Header.from_bytes(b"\x89TPP\r\n\x1a\n" + bytes(200))


def test_text_mode_transfer_is_diagnosed():
    mangled = make_header().to_bytes().replace(b"\r\n", b"\n", 1)
    with pytest.raises(BadMagic, match="text mode"):
        Header.from_bytes(mangled)


def test_short_data():
    with pytest.raises(Truncated):
        Header.from_bytes(MAGIC[:5])
    with pytest.raises(Truncated):
        Header.from_bytes(make_header().to_bytes()[:100])
    with pytest.raises(BadMagic):
        Header.from_bytes(b"\x89TPX")


def test_unknown_major_version():
    data = patched(make_header().to_bytes(), 8, "<B", 2)
    with pytest.raises(UnsupportedVersion, match=r"version 2\.0 is not supported"):
        Header.from_bytes(data)


def test_higher_minor_with_longer_header_is_read():
    prior = bytes(range(32))
    data = bytearray(make_header(version_minor=1, prior_sha256=prior).to_bytes()[:164])
    data[9] = 3  # version 1.3
    data[10:12] = struct.pack("<H", 172)
    data += b"\x01\x02\x03\x04"  # a field of version 1.3, skipped
    data += struct.pack("<I", zlib.crc32(data))
    header = Header.from_bytes(bytes(data))
    assert header.version_minor == 3
    assert header == make_header(version_minor=3, prior_sha256=prior)
    assert check_prefix(bytes(data)) == 172


def test_version_1_1_header_names_the_prior():
    prior = bytes(range(32))
    data = make_header(version_minor=1, prior_sha256=prior).to_bytes()
    assert len(data) == spec.HEADER_SIZE_1_1 and data[132:164] == prior
    assert Header.from_bytes(data).prior_sha256 == prior
    assert make_header(version_minor=1).prior_sha256 == spec.UNIFORM_PRIOR_SHA256
    with pytest.raises(FieldOutOfRange, match="needs version 1.1"):
        make_header(prior_sha256=prior)
    short = bytearray(make_header().to_bytes())
    short[9] = 1  # a 1.1 header must have room for prior_sha256
    short[-4:] = struct.pack("<I", zlib.crc32(short[:-4]))
    with pytest.raises(FieldOutOfRange) as info:
        Header.from_bytes(bytes(short))
    assert info.value.field == "header_size" and "at least 168" in str(info.value)


@pytest.mark.parametrize("size", [0, 135, 4097, 0xFFFF])
def test_header_size_out_of_range(size):
    data = bytearray(make_header().to_bytes())
    data[10:12] = struct.pack("<H", size)
    with pytest.raises(FieldOutOfRange) as info:
        Header.from_bytes(bytes(data))
    assert info.value.field == "header_size"


def test_crc_covers_every_header_byte():
    data = make_header().to_bytes()
    for offset in range(12, 136):  # before 12, magic/version/size are checked first
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x10
        with pytest.raises(ChecksumMismatch) as info:
            Header.from_bytes(bytes(corrupted))
        assert info.value.offset == 132 and info.value.field == "header_crc32"


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "field"),
    [
        (12, "<I", 1, "flags"),
        (107, "<B", 1, "reserved_107"),
        (114, "<H", 0x8000, "reserved_114"),
        (16, "<4s", b"ab\0c", "model_id"),
        (16, "<4s", b"\0\0\0\0", "model_id"),
        (16, "<2s", b"A_", "model_id"),
        (16, "<1s", b"\xe9", "model_id"),
        (92, "<B", 0, "n_codebooks"),
        (95, "<B", 9, "channel_mode"),
        (116, "<Q", 2**48 + 1, "source_frames"),
        (124, "<Q", 2**64 - 2, "model_samples"),
    ],
)
def test_bad_field_bytes(offset, fmt, value, field):
    data = patched(make_header().to_bytes(), offset, fmt, value)
    with pytest.raises(FieldOutOfRange) as info:
        Header.from_bytes(data, path="x.tpk")
    assert info.value.field == field
    assert info.value.offset == spec.HEADER_OFFSET[field]
    assert info.value.path == "x.tpk"


def test_format_md_matches_spec_module():
    """The header table and version line of docs/FORMAT.md say what spec.py says."""
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text(
        encoding="utf-8"
    )
    assert f"Version {spec.VERSION_MAJOR}.{spec.VERSION_MINOR}, {spec.FORMAT_DATE}" in text
    rows = re.findall(
        r"^\| (\d+) \| (\d+) \| \w+ \| `(\w+)` \|", text.split("## Header")[1].split("###")[0], re.M
    )
    documented = {name: (int(offset), int(size)) for offset, size, name in rows}
    for name, offset, code in spec.HEADER_FIELDS + spec.HEADER_FIELDS_1_1 + spec.HEADER_FIELDS_1_4:
        if not name.startswith("reserved"):
            assert documented.pop(name) == (offset, struct.calcsize("<" + code)), name
    assert documented == {"header_crc32": (spec.HEADER_SIZE_1_4 - 4, 4)}


def test_version_1_4_header_holds_the_keyframe_interval():
    header = make_header(version_minor=4, ctx_keyframe=6)
    data = header.to_bytes()
    assert len(data) == spec.HEADER_SIZE_1_4 == 172 and data[164:168] == b"\x06\x00\x00\x00"
    assert Header.from_bytes(data) == header and Header.from_bytes(data).ctx_keyframe == 6
    assert make_header(version_minor=4).ctx_keyframe == 1  # 1: every chunk stands alone
    with pytest.raises(FieldOutOfRange, match="needs version 1.4") as info:
        make_header(version_minor=3, ctx_keyframe=6)
    assert info.value.field == "ctx_keyframe"
    for offset, value, field in ((164, 0, "ctx_keyframe"), (166, 1, "reserved_166")):
        with pytest.raises(FieldOutOfRange) as info:
            Header.from_bytes(patched(data, offset, "<H", value))
        assert (info.value.field, info.value.offset) == (field, offset)
    short = bytearray(make_header(version_minor=1).to_bytes())
    short[9] = 4  # a 1.4 header must have room for ctx_keyframe
    short[-4:] = struct.pack("<I", zlib.crc32(short[:-4]))
    with pytest.raises(FieldOutOfRange) as info:
        Header.from_bytes(bytes(short))
    assert info.value.field == "header_size" and "at least 172" in str(info.value)
