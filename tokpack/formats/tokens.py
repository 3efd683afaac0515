"""Tokens-only containers: any codec's token arrays, stored and given back without a model
(``tokpack pack`` / ``tokpack unpack``; docs/FORMAT.md, flag ``TOKENS_ONLY``).

numpy only: a dataset loader gets the tokens of any container here without torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import BinaryIO

import numpy as np

from tokpack.errors import FieldOutOfRange, TokensError, UsageError
from tokpack.formats import spec
from tokpack.formats.header import Header
from tokpack.formats.prior import Prior, PriorSource, generic_prior, generic_sha256
from tokpack.formats.reader import ContainerReader
from tokpack.formats.writer import ContainerWriter, keyframe_chunks

DEFAULT_CODEC = "tokens"  # the model_id of tokens whose codec was not named
CHUNK_SECONDS = 10  # frames per chunk: about this many seconds, within MAX_CHUNK_TOKENS


def frame_rate_fraction(frame_rate: float | Fraction, sample_rate: int | None = None) -> tuple[int, int]:
    """(model_sample_rate, hop_length) whose ratio is ``frame_rate``: with ``sample_rate``
    the hop is ``sample_rate / frame_rate`` (which must be a whole number); else the
    fraction nearest ``frame_rate`` (12.5 -> 25/2, 86.1328125 -> 11025/128)."""
    if not frame_rate > 0 or frame_rate != frame_rate or frame_rate == float("inf"):
        raise UsageError(f"--frame-rate {frame_rate} must be a positive number of frames per second")
    if sample_rate is not None:
        hop = Fraction(sample_rate) / Fraction(frame_rate)
        if hop.denominator != 1 or not 1 <= hop <= spec.MAX_HOP_LENGTH:
            raise UsageError(f"--sample-rate {sample_rate} / --frame-rate {frame_rate} is not a whole "
                             f"number of samples per frame (1..{spec.MAX_HOP_LENGTH})")
        if not 1 <= sample_rate <= spec.MAX_SAMPLE_RATE:
            raise UsageError(f"--sample-rate {sample_rate} is out of range 1..{spec.MAX_SAMPLE_RATE}")
        return int(sample_rate), int(hop)
    rate = Fraction(frame_rate).limit_denominator(spec.MAX_HOP_LENGTH)
    if rate <= 0 or abs(float(rate) - float(frame_rate)) > 1e-9 * float(frame_rate):
        raise UsageError(f"--frame-rate {frame_rate} is not a positive rate a header can hold "
                         "(give --sample-rate too)")
    if rate.numerator > spec.MAX_SAMPLE_RATE:
        raise UsageError(f"--frame-rate {frame_rate} is too high (at most {spec.MAX_SAMPLE_RATE} Hz)")
    return rate.numerator, rate.denominator


def check_options(codebook_size: int, frame_rate, sample_rate: int | None = None,
                  codec: str = DEFAULT_CODEC) -> tuple[int, int]:
    """The options of :func:`pack`, checked before any array is read (UsageError);
    returns (model_sample_rate, hop_length)."""
    if not spec.MIN_CODEBOOK_SIZE <= codebook_size <= spec.MAX_CODEBOOK_SIZE:
        raise UsageError(f"--codebook-size {codebook_size} is out of range "
                         f"{spec.MIN_CODEBOOK_SIZE}..{spec.MAX_CODEBOOK_SIZE}")
    if not (1 <= len(codec) <= spec.MODEL_ID_SIZE and set(codec.encode()) <= spec.MODEL_ID_ALPHABET):
        raise UsageError(f"--codec {codec!r}: 1..32 characters of [a-z0-9_.-]")
    return frame_rate_fraction(frame_rate, sample_rate)


def check_array(array, codebook_size: int) -> np.ndarray:
    """``array`` as uint16 [S, K, T] (from [K, T] or [S, K, T] of an integer dtype with every
    value in [0, codebook_size)); TokensError naming what is wrong otherwise."""
    if not isinstance(array, np.ndarray):
        raise TokensError(f"expected an array, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TokensError(f"tokens must be integers, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise TokensError(f"tokens must be [codebooks, frames] or [streams, codebooks, frames], got shape "
                          f"{tuple(array.shape)}")
    tokens = array if array.ndim == 3 else array[np.newaxis]
    streams, codebooks, _ = tokens.shape
    if not 1 <= codebooks <= spec.MAX_CODEBOOKS or not 1 <= streams <= spec.MAX_STREAMS:
        raise TokensError(f"shape {tuple(array.shape)}: a container holds 1..{spec.MAX_CODEBOOKS} codebooks "
                          f"and 1..{spec.MAX_STREAMS} streams")
    if tokens.size:
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= codebook_size:
            bad = low if low < 0 else high
            where = tuple(int(i) for i in np.argwhere(array == bad)[0])
            raise TokensError(f"token {bad} at index {where} is outside [0, {codebook_size}) "
                              "(--codebook-size)")
    return tokens.astype(np.uint16)


def tokens_header(shape: tuple[int, ...], codebook_size: int, frame_rate, *, sample_rate: int | None = None,
                  codec: str = DEFAULT_CODEC, prior_sha256: bytes | None = None) -> Header:
    """The header of a tokens-only container for an array of ``shape`` ([K, T] or [S, K, T])."""
    rate, hop = check_options(codebook_size, frame_rate, sample_rate, codec)
    streams, codebooks, frames = (1, *shape) if len(shape) == 2 else shape
    per_chunk = max(1, min(spec.MAX_FRAMES_PER_CHUNK, round(CHUNK_SECONDS * rate / hop),
                           spec.MAX_CHUNK_TOKENS // (streams * codebooks)))
    samples = frames * hop
    try:
        return Header(
            model_id=codec, weights_sha256=bytes(spec.WEIGHTS_SHA256_SIZE), model_sample_rate=rate,
            hop_length=hop, codebook_size=codebook_size, n_codebooks=codebooks, model_channels=1,
            source_sample_rate=rate, source_channels=streams, n_streams=streams,
            channel_mode=spec.ChannelMode.SPLIT if streams > 1 else spec.ChannelMode.AS_IS,
            frames_per_chunk=per_chunk, source_frames=samples, model_samples=samples,
            version_minor=spec.FLAGS_MINOR, prior_sha256=prior_sha256,
            flags=spec.Flags.TOKENS_ONLY | (spec.Flags.STREAM_AXIS if len(shape) == 3 else 0),
        )
    except FieldOutOfRange as exc:
        raise TokensError(f"cannot be stored: {exc.message}") from None


@dataclasses.dataclass
class PackResult:
    header: Header
    bytes_out: int
    tokens: int


def pack(array: np.ndarray, dst: str | os.PathLike | BinaryIO, *, codebook_size: int, frame_rate,
         sample_rate: int | None = None, codec: str = DEFAULT_CODEC, coder: str = "auto",
         prior: Prior | None = None, keyframe: float | None = None) -> PackResult:
    """Store ``array`` ([K, T] or [S, K, T] integers below ``codebook_size``) in a
    tokens-only container at ``dst`` (a path, written in place, or a binary file).
    ``prior``: the CTX prior of coders "auto" and "ctx" (default: the generic prior of
    these codebooks, prior.generic_prior). ``keyframe``: seconds between fresh starts of
    carried CTX models (default writer.KEYFRAME_SECONDS; 0: every chunk stands alone)."""
    tokens = check_array(array, codebook_size)
    generic = prior is None and coder in ("auto", "ctx")
    header = tokens_header(np.shape(array), codebook_size, frame_rate, sample_rate=sample_rate, codec=codec,
                           prior_sha256=generic_sha256(codebook_size) if generic
                           else None if prior is None else prior.sha256)
    if generic:  # built once the header has checked the codebook size
        prior = generic_prior(codebook_size, header.n_codebooks)
    if prior is not None and (prior.codebook_size != codebook_size or prior.n_codebooks < header.n_codebooks):
        raise TokensError(f"the prior is for {prior.n_codebooks} codebook(s) of {prior.codebook_size} codes; "
                          f"these tokens have {header.n_codebooks} of {codebook_size}")
    with ContainerWriter(dst, header, coder=coder, prior=prior,
                         keyframe=keyframe_chunks(header, keyframe)) as writer:
        step = header.frames_per_chunk
        for start in range(0, tokens.shape[2], step):
            writer.write(tokens[:, :, start : start + step])
        writer.close(source_frames=header.source_frames, model_samples=header.model_samples)
    return PackResult(writer.header, writer.bytes_written, int(tokens.size))


def unpack(src: str | os.PathLike | BinaryIO, *, priors: Sequence[PriorSource] = (),
           dtype=None) -> np.ndarray:
    """The tokens of any container: the array a tokens-only container was packed from
    (its rank and values), else [K, T] for one stream and [S, K, T] for several. ``dtype``:
    default the smallest unsigned type that holds the codebook size."""
    with ContainerReader(src, priors=priors) as reader:
        header = reader.header
        parts = [chunk.tokens for chunk in reader]
    shape = (header.n_streams, header.n_codebooks, 0)
    tokens = np.concatenate(parts, axis=2) if parts else np.zeros(shape, np.uint16)
    if dtype is None:
        dtype = np.uint8 if header.codebook_size <= 256 else np.uint16
    three = header.flags & spec.Flags.STREAM_AXIS or header.n_streams > 1
    return (tokens if three else tokens[0]).astype(dtype)
