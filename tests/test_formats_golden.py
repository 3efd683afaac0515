"""Golden vectors (tests/data, docs/FORMAT.md) and what corrupting them must do."""

from __future__ import annotations

import hashlib
import importlib.util
import pathlib
import struct

import numpy as np
import pytest

from tokpack.errors import (
    ChecksumMismatch,
    FieldOutOfRange,
    FormatError,
    Truncated,
    UnsupportedFeature,
)
from tokpack.formats import ChannelMode, Coder, Resampler, loads, read_container, spec
from tokpack.formats.chunk import frame_chunk

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
_spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

VECTORS = make_golden.golden_vectors()
PRIORS = [DATA / "golden.tpp"]  # ctx_prior.tpk was coded with it
NAMES = sorted(VECTORS)


def golden(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_every_vector_is_on_disk_and_documented():
    assert sorted(path.name for path in DATA.glob("*.tpk")) == NAMES
    format_md = (ROOT / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"| `{name}` | {len(golden(name))} |" in format_md


@pytest.mark.parametrize("name", NAMES)
def test_vectors_regenerate_byte_for_byte(name):
    assert golden(name) == VECTORS[name]


def test_tiny_24khz_content():
    container = read_container(DATA / "tiny_24khz.tpk")
    header = container.header
    assert (header.model_id, header.model_sample_rate, header.hop_length) == (
        "test_24khz",
        24_000,
        320,
    )
    assert (header.n_codebooks, header.codebook_size, header.frames_per_chunk) == (2, 1024, 4)
    assert header.weights_sha256 == hashlib.sha256(b"tokpack golden vector weights").digest()
    expected = np.random.default_rng(make_golden.SEED).integers(0, 1024, (2, 5))
    assert np.array_equal(container.tokens[0], expected)
    assert container.trailer.n_chunks == 2 and container.trailer.total_frames == 5
    assert (container.trailer.source_frames, container.trailer.model_samples) == (1600, 1600)


def test_empty_content():
    container = read_container(DATA / "empty.tpk")
    assert container.tokens.shape == (1, 2, 0)
    assert container.trailer.n_chunks == 0
    assert container.trailer.token_digest == hashlib.blake2b(digest_size=16).digest()
    assert len(golden("empty.tpk")) == spec.HEADER_SIZE + spec.END_CHUNK_SIZE


def test_segmented_48khz_content():
    container = read_container(DATA / "segmented_48khz.tpk")
    header = container.header
    assert header.segmented and header.segment_frames == 5 and header.segments_per_chunk == 2
    assert header.resampler == Resampler.SINC_HANN and header.model_channels == 2
    assert container.segment_frames.tolist() == [5, 4, 1]
    assert container.scales.shape == (3, 1) and np.all(container.scales > 0)
    assert container.tokens.shape == (1, 4, 10)
    assert (header.source_frames, header.model_samples) == (2251, 2451)


def test_split_3ch_zstd_content():
    container = read_container(DATA / "split_3ch_zstd.tpk")
    header = container.header
    assert header.channel_mode == ChannelMode.SPLIT and header.n_streams == 3
    assert header.source_frames is None and header.model_samples is None
    assert (container.trailer.source_frames, container.trailer.model_samples) == (25_600, 12_800)
    tokens = container.tokens
    assert tokens.shape == (3, 4, 40)
    assert np.array_equal(tokens[:, :, 6:], tokens[:, :, :-6])  # period 6


def test_coders_of_the_vectors():
    def coders(name):
        data = golden(name)
        offset, found = spec.HEADER_SIZE, []
        while data[offset] == spec.ChunkType.TOKENS:
            found.append(data[offset + 1])
            offset += spec.CHUNK_FRAMING_SIZE + struct.unpack_from("<I", data, offset + 4)[0]
        return found

    assert coders("tiny_24khz.tpk") == [Coder.PACK, Coder.PACK]
    assert coders("split_3ch_zstd.tpk") == [Coder.PACK_ZSTD]
    assert coders("planes_cb1000.tpk") == [Coder.PLANES_ZSTD]
    assert read_container(DATA / "planes_cb1000.tpk").tokens.max() < 1000


@pytest.mark.parametrize("name", NAMES)
def test_every_single_byte_change_is_a_format_error(name):
    data = golden(name)
    wrong = []
    for offset in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            corrupted = bytearray(data)
            corrupted[offset] ^= mask
            try:
                loads(bytes(corrupted), priors=PRIORS)
                wrong.append((offset, mask, "accepted"))
            except FormatError:
                pass
            except Exception as error:  # any other type is the failure
                wrong.append((offset, mask, repr(error)))
    assert wrong == []


@pytest.mark.parametrize("name", NAMES)
def test_every_truncation_is_a_format_error(name):
    data = golden(name)
    for length in range(len(data)):
        with pytest.raises(FormatError) as info:
            loads(data[:length], priors=PRIORS)
        assert isinstance(info.value, Truncated) or length < 8  # a cut magic reads as bad magic


@pytest.mark.parametrize("tail", [b"\0", b"\x02", golden("empty.tpk")[-56:], b"x" * 100])
def test_bytes_after_end_are_an_error(tail):
    with pytest.raises(FormatError, match="after the END chunk") as info:
        loads(golden("tiny_24khz.tpk") + tail)
    assert info.value.offset == len(golden("tiny_24khz.tpk"))


def splice_before_end(data: bytes, chunk: bytes) -> bytes:
    return data[: -spec.END_CHUNK_SIZE] + chunk + data[-spec.END_CHUNK_SIZE :]


@pytest.mark.parametrize("name", NAMES)
def test_optional_chunks_are_skipped(name):
    data = golden(name)
    extra = frame_chunk(0x90, 7, 9, b"a future writer's notes") + frame_chunk(0xFF, 0, 0, b"")
    spliced = splice_before_end(data, extra)
    original, read = loads(data, priors=PRIORS), loads(spliced, priors=PRIORS)
    assert np.array_equal(read.tokens, original.tokens)
    assert read.trailer == original.trailer
    first = original.header.header_size
    spliced = data[:first] + extra + data[first:]
    assert np.array_equal(loads(spliced, priors=PRIORS).tokens, original.tokens)


def test_optional_chunk_crc_is_checked():
    chunk = bytearray(frame_chunk(0x80, 0, 0, b"notes"))
    chunk[9] ^= 1
    with pytest.raises(ChecksumMismatch, match="optional chunk 0x80"):
        loads(splice_before_end(golden("tiny_24khz.tpk"), bytes(chunk)))


def test_oversized_optional_chunk_is_refused_before_reading():
    head = struct.pack(spec.CHUNK_HEAD_STRUCT, 0x90, 0, 0, spec.MAX_OPTIONAL_PAYLOAD + 1)
    with pytest.raises(FieldOutOfRange) as info:
        loads(splice_before_end(golden("empty.tpk"), head))
    assert info.value.field == "payload_length" and info.value.offset == spec.HEADER_SIZE + 4


@pytest.mark.parametrize("chunk_type", [0x03, 0x42, 0x7F])
def test_unknown_critical_chunk(chunk_type):
    with pytest.raises(UnsupportedFeature) as info:
        loads(splice_before_end(golden("tiny_24khz.tpk"), frame_chunk(chunk_type, 0, 0, b"")))
    assert info.value.field == "chunk_type"
    assert f"0x{chunk_type:02X}" in str(info.value)


def test_chunk_type_zero():
    with pytest.raises(FieldOutOfRange, match="0x00"):
        loads(splice_before_end(golden("empty.tpk"), frame_chunk(0x00, 0, 0, b"")))


def test_errors_name_path_offset_and_chunk(tmp_path):
    data = bytearray(golden("tiny_24khz.tpk"))
    crc_offset = len(data) - spec.END_CHUNK_SIZE - 4  # CRC of TOKENS chunk 1
    data[crc_offset] ^= 0xFF
    path = tmp_path / "speech.tpk"
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as info:
        read_container(path)
    assert str(info.value).startswith(
        f"{path}: offset {crc_offset}, crc32: TOKENS chunk 1 (frames 4-4, 0.05-0.07 s) is corrupt"
    )
    assert (info.value.offset, info.value.field, info.value.path) == (
        crc_offset,
        "crc32",
        str(path),
    )


def test_crc_check_comes_before_payload_parsing():
    """A damaged coder byte reads as a checksum error, not as an unknown coder."""
    data = bytearray(golden("tiny_24khz.tpk"))
    data[spec.HEADER_SIZE + 1] = 0x09
    with pytest.raises(ChecksumMismatch):
        loads(bytes(data))


def test_tokens_only_content():
    from tokpack.formats.tokens import unpack

    header = read_container(DATA / "tokens_only.tpk").header
    assert header.tokens_only and header.flags == spec.Flags.TOKENS_ONLY | spec.Flags.STREAM_AXIS
    assert (header.version_minor, header.model_id, header.frame_rate) == (2, "snac", 21.5)
    array = unpack(DATA / "tokens_only.tpk")
    assert array.shape == (2, 3, 20) and array.dtype == np.uint16 and array.max() < 4096


def test_generic_prior_content():
    """Named by the digest of a text, decoded with no prior given or on disk."""
    from tokpack.formats import ContainerReader

    container = read_container(DATA / "ctx_generic.tpk")
    assert container.header.prior_sha256 == hashlib.sha256(
        b"tokpack generic CTX prior, 64 codes").digest()
    assert container.tokens.shape == (1, 2, 60) and container.tokens.max() < 64
    with ContainerReader(DATA / "ctx_generic.tpk") as reader:
        assert [int(chunk.coder) for chunk in reader] == [3]


def test_carried_models_content(monkeypatch):
    """Version 1.4: coder 4 between keyframes; the halving vector depends on its halving."""
    from tokpack.formats import ContainerReader

    for name, keyframe, coders in (("ctx_carry.tpk", 3, [3, 4, 4, 3, 4, 4, 3]),
                                   ("ctx_carry_auto.tpk", 3, [0, 4, 0, 0, 4, 4, 0]),
                                   ("ctx_halving.tpk", 4, [3, 4, 4, 4, 3, 4])):
        with ContainerReader(DATA / name, priors=PRIORS) as reader:
            assert (reader.header.version_minor, reader.header.ctx_keyframe) == (4, keyframe)
            assert reader.header.header_size == spec.HEADER_SIZE_1_4
            assert [int(chunk.coder) for chunk in reader] == coders
    container = read_container(DATA / "ctx_halving.tpk")
    monkeypatch.setattr(spec, "CTX_HALVE_ABOVE", 1 << 30)  # no halving: other bytes
    from tokpack.formats import dumps

    unhalved = dumps(container.header, container.tokens, coder="ctx", keyframe=4)
    assert len(unhalved) > len(golden("ctx_halving.tpk"))  # the codes' frequencies shift
