"""What writer and reader share about chunks: framing, segment tables, END, limits."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from tokpack.formats import spec
from tokpack.formats.header import Header


@dataclasses.dataclass(frozen=True)
class Trailer:
    """The END chunk: totals a streaming writer only knows at the end."""

    n_chunks: int
    total_frames: int
    source_frames: int
    model_samples: int
    token_digest: bytes

    def to_bytes(self) -> bytes:
        return struct.pack(
            spec.END_STRUCT,
            self.n_chunks,
            self.total_frames,
            self.source_frames,
            self.model_samples,
            self.token_digest,
        )


@dataclasses.dataclass
class Chunk:
    """One decoded TOKENS chunk as the reader yields it."""

    index: int
    first_frame: int
    n_frames: int
    coder: int
    tokens: np.ndarray  # uint16 [n_streams, n_codebooks, n_frames]
    segment_frames: np.ndarray | None  # int64 [n_segments]
    scales: np.ndarray | None  # float32 [n_segments, n_streams]
    offset: int  # of the chunk's first byte in the file
    size: int  # framing included
    coded_size: int  # bytes of coded tokens (payload minus segment table)


def frame_chunk(chunk_type: int, param: int, count: int, payload: bytes) -> bytes:
    """type, param, count, payload_length, payload, then the CRC-32 of all of those."""
    head = struct.pack(spec.CHUNK_HEAD_STRUCT, chunk_type, param, count, len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


def segment_record(n_streams: int) -> np.dtype:
    """One segment table entry: frames u16, then one f32 scale per stream (no padding)."""
    return np.dtype([("frames", "<u2"), ("scales", "<f4", (n_streams,))])


def segment_table_size(n_segments: int, n_streams: int) -> int:
    return spec.SEGMENT_COUNT_SIZE + n_segments * segment_record(n_streams).itemsize


def encode_segment_table(frames: np.ndarray, scales: np.ndarray) -> bytes:
    records = np.zeros(len(frames), dtype=segment_record(scales.shape[1]))
    records["frames"] = frames
    records["scales"] = scales
    return struct.pack(spec.SEGMENT_COUNT_STRUCT, len(frames)) + records.tobytes()


def tokens_payload_limit(header: Header, n_frames: int, n_segments: int) -> int:
    """Largest valid TOKENS payload: segment table + zstd's worst case for the raw tokens."""
    raw = 2 * header.n_streams * header.n_codebooks * n_frames
    table = segment_table_size(n_segments, header.n_streams) if header.segmented else 0
    return table + raw + raw // 256 + spec.TOKENS_PAYLOAD_SLACK


def covered_samples(header: Header, total_frames: int, n_segments: int, last_segment_frames: int) -> int:
    """Model-rate samples that the frames of a file can stand for: the most END's
    ``model_samples`` may be (FORMAT.md "Reader limits")."""
    if not header.segmented:
        return total_frames * header.hop_length
    if not n_segments:
        return 0
    return (n_segments - 1) * header.segment_stride + last_segment_frames * header.hop_length


def frame_sample(header: Header, frame: int) -> int:
    """First model-rate sample of the token frame ``frame`` (segments full)."""
    if not header.segmented:
        return frame * header.hop_length
    segment, within = divmod(frame, header.segment_frames)
    return segment * header.segment_stride + within * header.hop_length


def chunk_sample(header: Header, index: int) -> int:
    """First model-rate sample of TOKENS chunk ``index`` (every chunk before it full)."""
    return frame_sample(header, index * header.frames_per_chunk)


def frame_seconds(header: Header, frame: int) -> float:
    """Start time in the model-rate signal of the token frame ``frame`` (segments full)."""
    return frame_sample(header, frame) / header.model_sample_rate


def chunk_label(header: Header, index: int, first_frame: int, n_frames: int | None) -> str:
    """``TOKENS chunk 3 (frames 2250-2999, 30.00-40.00 s)`` for error messages."""
    start = frame_seconds(header, first_frame)
    if n_frames is None:
        return f"TOKENS chunk {index} (from frame {first_frame}, {start:.2f} s)"
    end = frame_seconds(header, first_frame + n_frames)
    last = first_frame + n_frames - 1
    return f"TOKENS chunk {index} (frames {first_frame}-{last}, {start:.2f}-{end:.2f} s)"
