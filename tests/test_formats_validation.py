"""Files with valid CRCs but invalid content: each rule of FORMAT.md raises its typed error."""

from __future__ import annotations

import dataclasses
import io
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
from tokpack.formats import UNKNOWN, Coder, ContainerReader, Header, ctx, dumps, loads, spec
from tokpack.formats.chunk import encode_segment_table, frame_chunk
from tokpack.formats.coding import pack

HEADER = Header(
    model_id="test_24khz",
    weights_sha256=bytes(32),
    model_sample_rate=24_000,
    hop_length=320,
    codebook_size=1000,
    n_codebooks=2,
    model_channels=1,
    source_sample_rate=24_000,
    source_channels=1,
    frames_per_chunk=4,
    source_frames=1000,
    model_samples=1000,
)
# Segments of 20 samples (5 frames of 4) every 18; 2 segments per chunk.
SEGMENTED = Header(
    model_id="test_48khz",
    weights_sha256=bytes(32),
    model_sample_rate=300,
    hop_length=4,
    codebook_size=1024,
    n_codebooks=1,
    model_channels=1,
    source_sample_rate=300,
    source_channels=1,
    segment_length=20,
    segment_stride=18,
    frames_per_chunk=10,
    source_frames=100,
    model_samples=100,
)
FIRST = spec.HEADER_SIZE  # offset of the first chunk


def tokens_chunk(
    count: int, values=None, *, coder: int = Coder.PACK, table: bytes = b"", n_codebooks: int = 2
) -> bytes:
    values = (
        np.zeros(n_codebooks * count, np.uint16)
        if values is None
        else np.asarray(values, np.uint16)
    )
    return frame_chunk(spec.ChunkType.TOKENS, coder, count, table + pack(values, 10))


def segment_chunk(frames: list[int], scales=None, *, count: int | None = None) -> bytes:
    scales = (
        np.ones((len(frames), 1), np.float32) if scales is None else np.asarray(scales, np.float32)
    )
    table = encode_segment_table(np.array(frames), scales.reshape(len(frames), 1))
    return tokens_chunk(
        sum(frames) if count is None else count, np.zeros(sum(frames)), table=table, n_codebooks=1
    )


def rejected(data: bytes, error: type[FormatError], field: str) -> FormatError:
    with pytest.raises(error) as info:
        loads(data)
    assert info.value.field == field, str(info.value)
    return info.value


def with_end(data: bytes, **changes) -> bytes:
    """``data`` with END payload fields replaced (CRC recomputed)."""
    fields = dict(
        zip(
            ("n_chunks", "total_frames", "source_frames", "model_samples", "token_digest"),
            struct.unpack(spec.END_STRUCT, data[-48:-4]),
            strict=True,
        )
    )
    fields.update(changes)
    return data[: -spec.END_CHUNK_SIZE] + frame_chunk(
        spec.ChunkType.END, 0, 0, struct.pack(spec.END_STRUCT, *fields.values())
    )


def test_the_builders_make_valid_files():
    data = dumps(HEADER, np.zeros((2, 6), np.int64), coder="pack")
    assert (
        data == HEADER.to_bytes() + tokens_chunk(4) + tokens_chunk(2) + data[-spec.END_CHUNK_SIZE :]
    )
    assert with_end(data) == data
    header = dataclasses.replace(SEGMENTED, source_frames=22, model_samples=22)  # 18 + 1 * 4
    segmented = dumps(
        header,
        np.zeros((1, 6), np.int64),
        segment_frames=[5, 1],
        scales=[1.0, 1.0],
        coder="pack",
    )
    assert segmented[: -spec.END_CHUNK_SIZE] == header.to_bytes() + segment_chunk([5, 1])


def test_token_not_below_codebook_size():
    values = [0, 1, 2, 1000]  # stream 0, codebook 1, frame 1
    error = rejected(HEADER.to_bytes() + tokens_chunk(2, values), FieldOutOfRange, "tokens")
    assert "token 1000 at stream 0, codebook 1, frame 1 is not below codebook_size 1000" in str(
        error
    )
    assert error.offset == FIRST + spec.CHUNK_HEAD_SIZE


@pytest.mark.parametrize("count", [0, 5])
def test_chunk_frame_count_out_of_range(count):
    error = rejected(HEADER.to_bytes() + tokens_chunk(count), FieldOutOfRange, "count")
    assert error.offset == FIRST + 2


def test_only_the_last_chunk_may_be_short():
    data = HEADER.to_bytes() + tokens_chunk(3) + tokens_chunk(1)
    error = rejected(data, FieldOutOfRange, "chunk_type")
    assert "follows TOKENS chunk 0 of 3 frames" in str(error)
    assert error.offset == FIRST + spec.CHUNK_FRAMING_SIZE + 8


def test_unknown_coder():
    chunk = frame_chunk(spec.ChunkType.TOKENS, 5, 1, b"\0\0\0")
    error = rejected(HEADER.to_bytes() + chunk, UnsupportedFeature, "param")
    assert error.offset == FIRST + 1 and "coder 5" in str(error)


def test_ctx_carry_needs_a_version_1_4_header():
    header = dataclasses.replace(HEADER, version_minor=3)
    full = HEADER.frames_per_chunk
    chunks = (frame_chunk(spec.ChunkType.TOKENS, Coder.PACK, full, bytes(full * 20 // 8))
              + frame_chunk(spec.ChunkType.TOKENS, Coder.CTX_CARRY, 1, bytes(64)))
    error = rejected(header.to_bytes() + chunks, FieldOutOfRange, "param")
    assert "version 1.4" in str(error)


def test_ctx_is_refused_between_keyframes():
    """Where the models carry on, CTX chunks are coder 4 (salvage trusts coder 3 as a keyframe)."""
    header = dataclasses.replace(HEADER, version_minor=4, prior_sha256=bytes(32), ctx_keyframe=2)
    data = header.to_bytes() + frame_chunk(spec.ChunkType.TOKENS, Coder.PACK, HEADER.frames_per_chunk,
                                           bytes(HEADER.frames_per_chunk * 20 // 8))
    offset = len(data)
    data += frame_chunk(spec.ChunkType.TOKENS, Coder.CTX, 1, bytes(64))
    error = rejected(data, FieldOutOfRange, "param")
    assert error.offset == offset + 1 and "between keyframes" in str(error)


def test_ctx_carry_is_refused_at_a_keyframe():
    """Chunk 0, and every chunk whose index is a multiple of ctx_keyframe, starts afresh."""
    for keyframe, at in ((1, 1), (3, 0), (3, 3)):
        header = dataclasses.replace(HEADER, version_minor=4, prior_sha256=bytes(32),
                                     ctx_keyframe=keyframe)
        data = header.to_bytes()
        for i in range(at):
            data += frame_chunk(spec.ChunkType.TOKENS, Coder.PACK, HEADER.frames_per_chunk,
                                bytes(HEADER.frames_per_chunk * 20 // 8))
        offset = len(data)
        data += frame_chunk(spec.ChunkType.TOKENS, Coder.CTX_CARRY, 1, bytes(64))
        error = rejected(data, FieldOutOfRange, "param")
        assert error.offset == offset + 1 and "keyframe" in str(error), (keyframe, at)


def test_ctx_needs_a_version_1_1_header():
    chunk = frame_chunk(spec.ChunkType.TOKENS, Coder.CTX, 1, b"\0\0\0\0")
    error = rejected(HEADER.to_bytes() + chunk, FieldOutOfRange, "param")
    assert error.offset == FIRST + 1 and "version 1.1" in str(error)


def test_ctx_data_has_a_floor_of_bytes_per_token():
    """Reader limits: at least one bit per token up to 1024 codes (0 bytes for 4 frames is a
    CPU bomb, not a compressed chunk)."""
    header = dataclasses.replace(HEADER, version_minor=1)
    for count in (1, 4):
        chunk = frame_chunk(spec.ChunkType.TOKENS, Coder.CTX, count, b"")
        error = rejected(header.to_bytes() + chunk, FieldOutOfRange, "payload_length")
        assert "CTX takes at least 4" in str(error)
    assert spec.CTX_TABLE_UNIT == 1024
    assert ctx.min_bytes((1, 8, 752), 1024) == 752  # one bit per token
    assert ctx.min_bytes((1, 8, 750), 1024) == 752  # blocks of 16 frames count whole
    assert ctx.min_bytes((1, 8, 752), 2048) == 1504  # twice that at twice the table
    assert ctx.min_bytes((64, 64, 1), 1024) == 8192  # one-frame rows: a block's model each
    assert ctx.min_bytes((1, 1, 1), 16) == 2


def test_end_cannot_claim_more_samples_than_its_frames_stand_for():
    header = dataclasses.replace(HEADER, source_frames=None, model_samples=None)
    data = header.to_bytes() + dumps(HEADER, np.zeros((2, 4), np.int64), coder="pack")[FIRST:]
    assert loads(with_end(data, source_frames=1280, model_samples=1280)).trailer.model_samples == 1280
    error = rejected(with_end(data, source_frames=1280, model_samples=1281), FieldOutOfRange, "model_samples")
    assert "more than the 1280 the file's 4 frames stand for" in str(error)
    rejected(with_end(data, model_samples=2**48), FieldOutOfRange, "model_samples")
    error = rejected(with_end(data, source_frames=1002), FieldOutOfRange, "source_frames")
    assert "longer than the 1000 model samples" in str(error)
    segmented = dataclasses.replace(SEGMENTED, source_frames=None, model_samples=None)
    data = segmented.to_bytes() + dumps(
        dataclasses.replace(SEGMENTED, source_frames=40, model_samples=40),
        np.zeros((1, 8), np.int64), segment_frames=[5, 2, 1], scales=[1, 1, 1], coder="pack",
    )[FIRST:]
    assert loads(data).trailer.model_samples == 40  # segments at 0, 18, 36; the last 1 frame of 4
    rejected(with_end(data, model_samples=41), FieldOutOfRange, "model_samples")


def test_payload_length_is_bounded_before_reading():
    head = struct.pack(spec.CHUNK_HEAD_STRUCT, spec.ChunkType.TOKENS, 0, 4, 2**32 - 1)
    error = rejected(HEADER.to_bytes() + head, FieldOutOfRange, "payload_length")
    assert error.offset == FIRST + 4


def test_payload_length_is_bounded_by_the_chunks_own_frames():
    # 1 frame of 2 codebooks: R = 4 raw bytes, limit R + R // 256 + 64 = 68 bytes.
    chunk = frame_chunk(spec.ChunkType.TOKENS, Coder.PACK, 1, bytes(69))
    rejected(HEADER.to_bytes() + chunk, FieldOutOfRange, "payload_length")


def test_truncated_inside_a_payload():
    data = dumps(HEADER, np.zeros((2, 6), np.int64), coder="zstd")
    error = rejected(data[: FIRST + 10], Truncated, "payload")
    assert error.offset == FIRST + 8 and "TOKENS chunk 0" in str(error)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(n_chunks=3), "n_chunks"),
        (dict(total_frames=7), "total_frames"),
        (dict(source_frames=999), "source_frames"),
        (dict(model_samples=UNKNOWN), "model_samples"),
        (dict(model_samples=2**48 + 1), "model_samples"),
    ],
)
def test_end_totals_must_match(changes, field):
    data = dumps(HEADER, np.zeros((2, 6), np.int64), coder="zstd")
    error = rejected(with_end(data, **changes), FieldOutOfRange, field)
    end = len(data) - spec.END_CHUNK_SIZE
    assert error.offset == end + spec.CHUNK_HEAD_SIZE + spec.END_OFFSET[field]


def test_end_values_are_always_known_even_when_the_header_does_not_know():
    header = dataclasses.replace(HEADER, source_frames=None, model_samples=None)
    buffer = dumps(HEADER, np.zeros((2, 4), np.int64), coder="zstd")
    data = header.to_bytes() + buffer[FIRST:]
    assert loads(data).trailer.source_frames == 1000
    rejected(with_end(data, source_frames=UNKNOWN), FieldOutOfRange, "source_frames")


def test_token_digest():
    data = dumps(HEADER, np.zeros((2, 6), np.int64), coder="zstd")
    error = rejected(with_end(data, token_digest=bytes(16)), ChecksumMismatch, "token_digest")
    assert "does not match" in str(error)


def test_end_framing_rules():
    header = dataclasses.replace(HEADER, source_frames=0, model_samples=0)
    data = dumps(header, np.zeros((2, 0), np.int64), coder="zstd")
    body = data[: -spec.END_CHUNK_SIZE]
    payload = data[-48:-4]
    rejected(body + frame_chunk(spec.ChunkType.END, 1, 0, payload), FieldOutOfRange, "param")
    rejected(body + frame_chunk(spec.ChunkType.END, 0, 1, payload), FieldOutOfRange, "count")
    rejected(
        body + frame_chunk(spec.ChunkType.END, 0, 0, payload + b"\0"),
        FieldOutOfRange,
        "payload_length",
    )
    rejected(body, Truncated, "chunk_type")
    rejected(body + data[-spec.END_CHUNK_SIZE : -1], Truncated, "crc32")


@pytest.mark.parametrize(
    ("chunks", "field", "message"),
    [
        ([segment_chunk([5, 3], count=7)], "count", "hold 8 frames"),
        ([segment_chunk([6])], "segment.frames", "segment 0 has 6 frames"),
        ([segment_chunk([0], count=1)], "segment.frames", "segment 0 has 0 frames"),
        ([segment_chunk([3, 4])], "segment.frames", "segment 1 has 4 frames"),
        ([segment_chunk([5, 3]), segment_chunk([4])], "segment.frames", "segment 2 has 4 frames"),
        ([segment_chunk([5]), segment_chunk([5])], "chunk_type", "of 1 segments"),
        ([segment_chunk([5], [np.nan])], "segment.scale", "nan"),
        ([segment_chunk([5], [0.0])], "segment.scale", "0.0"),
        ([segment_chunk([5], [-1.0])], "segment.scale", "-1.0"),
        ([segment_chunk([5], [np.inf])], "segment.scale", "inf"),
    ],
)
def test_segment_table_rules(chunks, field, message):
    error = rejected(SEGMENTED.to_bytes() + b"".join(chunks), FieldOutOfRange, field)
    assert message in str(error)


@pytest.mark.parametrize(("n_segments", "count"), [(0, 1), (3, 3), (2, 1)])
def test_segment_count_out_of_range(n_segments, count):
    payload = struct.pack("<H", n_segments) + bytes(6 * n_segments) + bytes(8)
    chunk = frame_chunk(spec.ChunkType.TOKENS, Coder.PACK, count, payload)
    error = rejected(SEGMENTED.to_bytes() + chunk, FieldOutOfRange, "n_segments")
    assert error.offset == FIRST + spec.CHUNK_HEAD_SIZE


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x02\x00" + bytes(7)])
def test_segment_table_longer_than_payload(payload):
    chunk = frame_chunk(spec.ChunkType.TOKENS, Coder.PACK, 2, payload)
    rejected(SEGMENTED.to_bytes() + chunk, FieldOutOfRange, "payload_length")


def test_segmented_chunks_may_be_short_in_frames_but_not_in_segments():
    """The second-to-last segment may be short, so a full chunk can have < frames_per_chunk."""
    header = dataclasses.replace(SEGMENTED, source_frames=40, model_samples=40)  # 2 * 18 + 1 * 4
    data = dumps(
        header, np.zeros((1, 8), np.int64), segment_frames=[5, 2, 1], scales=[1, 1, 1], coder="zstd"
    )
    with ContainerReader(io.BytesIO(data)) as reader:
        assert [chunk.segment_frames.tolist() for chunk in reader] == [[5, 2], [1]]
