"""What `tokpack inspect` reports about a container, computed chunk by chunk (no torch).

Every number is derived from the file: sizes, rates, and per-codebook token statistics.
Keys and units are documented in docs/CLI.md; ``SCHEMA_VERSION`` changes when they do.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
import zstandard

from tokpack.formats import coding, spec
from tokpack.formats.prior import PriorSource
from tokpack.formats.reader import ContainerReader

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CodebookStats:
    index: int
    distinct_codes: int
    utilisation: float  # distinct_codes / codebook_size
    entropy_bits: float  # order-0 empirical entropy, bits per code
    coded_bits: float  # bits per code when this codebook alone is coded by the zstd-family coders
    coder_gain: float  # 1 - coded_bits / bits_per_code (negative: larger than bit-packing)


@dataclass(frozen=True)
class ContainerStats:
    schema_version: int
    path: str | None
    format: str  # "tpk", or "ecdc" (EnCodec's own file)
    tokens_only: bool  # a tokpack pack container: a codec's tokens without a model, no audio
    live: bool  # written live (LIVE and LAST chunks, FORMAT.md "Live containers")
    frames_per_chunk: int  # a live container's packet
    file_bytes: int
    model_id: str
    weights_sha256: str
    prior_sha256: str | None  # the CTX prior the header names (all zeros: uniform); None in 1.0
    model_sample_rate: int
    model_channels: int
    frame_rate_hz: float
    n_codebooks: int
    codebook_size: int
    bits_per_code: int
    n_streams: int
    channel_mode: str
    nominal_bitrate_bps: float
    source_sample_rate: int
    source_channels: int
    source_frames: int
    duration_s: float
    total_frames: int
    n_chunks: int
    bitrate_bps: float | None  # file bits / duration; None for an empty source
    compression_ratio: float | None  # 16-bit PCM of the source / file bytes (None: tokens only)
    token_bytes: int  # coded tokens only
    overhead_bytes: int  # everything else: header, chunk framing, segment tables, END
    coders: dict[str, int]  # TOKENS chunks per coder
    ctx_keyframe: int  # chunks per keyframe of carried CTX models (1: every chunk alone)
    codebooks: list[CodebookStats]

    def to_json(self) -> dict:
        return asdict(self)


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 entropy in bits per symbol of a histogram (0 for an empty one)."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def container_stats(
    src: str | os.PathLike | BinaryIO, *, path: str | None = None, priors: Sequence[PriorSource] = ()
) -> ContainerStats:
    """Read and validate a whole container, returning its :class:`ContainerStats`."""
    with ContainerReader(src, path=path, priors=priors) as reader:
        return reader_stats(reader)


def reader_stats(reader, *, file_format: str = "tpk", coder: str | None = None) -> ContainerStats:
    """The stats of what an open reader yields: a ContainerReader, or anything with its
    ``header``, ``trailer``, ``bytes_read``, ``path`` and chunks (EnCodec's .ecdc reader:
    ``file_format="ecdc"`` and ``coder``, the name of its one way of coding codes)."""
    compressor = zstandard.ZstdCompressor(level=spec.ZSTD_LEVEL)
    h = reader.header
    counts = np.zeros((h.n_codebooks, h.codebook_size), dtype=np.int64)
    coded_bytes = np.zeros(h.n_codebooks, dtype=np.int64)
    coders = {c.name.lower(): 0 for c in spec.Coder} if coder is None else {coder: 0}
    token_bytes = 0
    for chunk in reader:
        token_bytes += chunk.coded_size
        coders[spec.Coder(chunk.coder).name.lower() if coder is None else coder] += 1
        for k in range(h.n_codebooks):
            row = np.ascontiguousarray(chunk.tokens[:, k, :]).ravel()
            counts[k] += np.bincount(row, minlength=h.codebook_size)
            coded = coding.encode(row[np.newaxis, np.newaxis], h.bits_per_code, "auto", compressor)
            coded_bytes[k] += len(coded[1])
    trailer = reader.trailer
    file_bytes = reader.bytes_read
    n_codes = counts.sum(axis=1)
    codebooks = []
    for k in range(h.n_codebooks):
        coded = float(coded_bytes[k] * 8 / n_codes[k]) if n_codes[k] else 0.0
        distinct = int(np.count_nonzero(counts[k]))
        codebooks.append(
            CodebookStats(
                index=k,
                distinct_codes=distinct,
                utilisation=distinct / h.codebook_size,
                entropy_bits=entropy_bits(counts[k]),
                coded_bits=coded,
                coder_gain=1.0 - coded / h.bits_per_code if n_codes[k] else 0.0,
            )
        )
    duration = trailer.source_frames / h.source_sample_rate
    pcm_bytes = trailer.source_frames * h.source_channels * 2
    return ContainerStats(
        schema_version=SCHEMA_VERSION,
        path=reader.path,
        format=file_format,
        tokens_only=h.tokens_only,
        live=bool(getattr(reader, "live", False)),
        frames_per_chunk=h.frames_per_chunk,
        file_bytes=file_bytes,
        model_id=h.model_id,
        weights_sha256=h.weights_sha256.hex(),
        prior_sha256=None if h.prior_sha256 is None else h.prior_sha256.hex(),
        model_sample_rate=h.model_sample_rate,
        model_channels=h.model_channels,
        frame_rate_hz=h.frame_rate,
        n_codebooks=h.n_codebooks,
        codebook_size=h.codebook_size,
        bits_per_code=h.bits_per_code,
        n_streams=h.n_streams,
        channel_mode=spec.ChannelMode(h.channel_mode).name.lower(),
        nominal_bitrate_bps=h.bandwidth_bps * h.n_streams,
        source_sample_rate=h.source_sample_rate,
        source_channels=h.source_channels,
        source_frames=trailer.source_frames,
        duration_s=duration,
        total_frames=trailer.total_frames,
        n_chunks=trailer.n_chunks,
        bitrate_bps=file_bytes * 8 / duration if duration > 0 else None,
        compression_ratio=None if h.tokens_only else pcm_bytes / file_bytes,
        token_bytes=token_bytes,
        overhead_bytes=file_bytes - token_bytes,
        coders=coders,
        ctx_keyframe=h.ctx_keyframe,
        codebooks=codebooks,
    )
