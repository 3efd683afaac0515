"""One-shot API over the streaming reader and writer: dumps/loads and whole-file reads."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from tokpack.formats.chunk import Trailer
from tokpack.formats.header import Header
from tokpack.formats.prior import Prior, PriorSource
from tokpack.formats.reader import ContainerReader
from tokpack.formats.writer import ContainerWriter

Source = str | os.PathLike | BinaryIO


@dataclasses.dataclass
class Container:
    """A whole container in memory."""

    header: Header
    tokens: np.ndarray  # uint16 [n_streams, n_codebooks, total_frames]
    segment_frames: np.ndarray | None  # int64 [n_segments], segmented headers only
    scales: np.ndarray | None  # float32 [n_segments, n_streams], segmented headers only
    trailer: Trailer


def dumps(
    header: Header,
    tokens,
    *,
    scales=None,
    segment_frames=None,
    coder: str = "auto",
    prior: Prior | None = None,
    keyframe: int | None = None,
) -> bytes:
    """The container bytes of ``tokens`` ([S, K, T], or [K, T] for one stream).

    ``keyframe``: with CTX, chunks per keyframe of carried models (ContainerWriter).

    Segmented headers take the segments concatenated along T, their frame counts
    (``segment_frames``) and ``scales`` [n_segments, S]. The header must know both lengths.
    """
    if header.source_frames is None or header.model_samples is None:
        raise ValueError("dumps() needs a header with source_frames and model_samples")
    if (segment_frames is not None, scales is not None) != (header.segmented, header.segmented):
        need = "needs" if header.segmented else "takes no"
        raise ValueError(
            f"a {'' if header.segmented else 'un'}segmented header {need} segment_frames and scales"
        )
    buffer = io.BytesIO()
    with ContainerWriter(buffer, header, coder=coder, prior=prior, keyframe=keyframe) as writer:
        if header.segmented:
            frames = [int(n) for n in segment_frames]
            segment_scales = np.asarray(scales, dtype=np.float64).reshape(
                len(frames), header.n_streams
            )
            bounds = np.cumsum([0, *frames])
            array = np.asarray(tokens)
            if bounds[-1] != array.shape[-1]:
                raise ValueError(
                    f"segment_frames add up to {bounds[-1]}, tokens have {array.shape[-1]} frames"
                )
            for i, scale in enumerate(segment_scales):
                writer.write_segment(array[..., bounds[i] : bounds[i + 1]], scale)
        else:
            writer.write(tokens)
    return buffer.getvalue()


def loads(data: bytes, *, priors: Sequence[PriorSource] = ()) -> Container:
    return read_container(io.BytesIO(data), priors=priors)


def read_container(src: Source, *, priors: Sequence[PriorSource] = ()) -> Container:
    """Read and verify a whole container: every CRC, the END totals and the token digest."""
    with ContainerReader(src, priors=priors) as reader:
        chunks = list(reader)
        header, trailer = reader.header, reader.trailer
    shape = (header.n_streams, header.n_codebooks)
    tokens = (
        np.concatenate([c.tokens for c in chunks], axis=2)
        if chunks
        else np.zeros((*shape, 0), np.uint16)
    )
    segment_frames = scales = None
    if header.segmented:
        segment_frames = np.concatenate(
            [c.segment_frames for c in chunks] or [np.zeros(0, np.int64)]
        )
        scales = np.concatenate(
            [c.scales for c in chunks] or [np.zeros((0, header.n_streams), np.float32)]
        )
    return Container(header, tokens, segment_frames, scales, trailer)


def read_header(src: Source) -> Header:
    """Read and verify the header only."""
    with ContainerReader(src) as reader:
        return reader.header


def read_tokens(src: Source, *, priors: Sequence[PriorSource] = ()) -> np.ndarray:
    """All tokens, verified: [K, T] for one stream, else [S, K, T]; ``priors`` are .tpp
    files (or priors) to look in for the one a CTX-coded container names."""
    tokens = read_container(src, priors=priors).tokens
    return tokens[0] if tokens.shape[0] == 1 else tokens
