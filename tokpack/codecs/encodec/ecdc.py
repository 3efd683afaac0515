"""EnCodec's own compressed-audio files (``.ecdc``), read and written with encodec's code.

The layout (encodec 0.1.1, ``encodec/binary.py`` and ``encodec/compress.py``):

| bytes | field |
|---|---|
| 4 | magic ``ECDC`` |
| 1 | version, 0 |
| 4 | metadata size N, unsigned big-endian |
| N | metadata, UTF-8 JSON: ``{"m": model, "al": audio length (samples at the model rate), "nc": codebooks, "lm": LM-coded?}`` |
| ... | per segment (one for ``encodec_24khz``, one per 1 s at 47520-sample strides for ``encodec_48khz``): the scale as a big-endian float32 (48 kHz only), then its codes, frame by frame, codebook by codebook, either bit-packed (10 bits each, least significant bit first) or arithmetic-coded under the LM, padded to a byte |

A segment of n samples has ceil(n / 320) frames. The file records no weights identity, no
source rate, channel count or length, and no checksum: it decodes at the model's rate
and channels, to exactly ``al`` samples.

Reading parses the header with ``encodec.binary.read_ecdc_header`` (after bounding the
metadata size) and the codes with ``encodec.binary.BitUnpacker`` or :class:`LMDecoder`;
writing uses ``write_ecdc_header``, ``BitPacker`` and :class:`LMEncoder`, so for the same
model, codes and LM the bytes are ``encodec.compress``'s. Model names are tokpack's: the
official models keep encodec's names; a test model writes its own (``test_24khz``),
which encodec's ``decompress`` refuses, as it should (other weights).
"""

from __future__ import annotations

import io
import itertools
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from tokpack.codec.registry import MODELS, ModelSpec
from tokpack.errors import (
    BadMagic,
    FieldOutOfRange,
    FormatError,
    Truncated,
    UnsupportedFeature,
    UnsupportedVersion,
    UsageError,
)
from tokpack.formats import ChannelMode, Chunk, Header, Resampler, Trailer
from tokpack.formats.reader import _Source

if TYPE_CHECKING:
    from tokpack.codecs.encodec.lm import LoadedLM

MAGIC = b"ECDC"
VERSION = 0
FIXED_HEADER = struct.Struct("!4sBI")  # magic, version, metadata size (encodec's)
SCALE = struct.Struct("!f")
#: encodec writes ~60 bytes of metadata; more than this is not an .ecdc file
MAX_METADATA_SIZE = 1 << 16
#: audio length bound, as the .tpk header's (2^48 samples)
MAX_AUDIO_LENGTH = 1 << 48
#: no weights identity in the file
UNKNOWN_WEIGHTS = bytes(32)


#: the coder (``--entropy``) that LM-codes an .ecdc file; "auto" bit-packs it
LM_CODER = "encodec-lm"


def check_ecdc_options(*, coder: str = "auto", channels: str = "auto") -> bool:
    """Whether encoding to .ecdc with these options LM-codes; UsageError for options it
    cannot take. ``coder``: "auto" bit-packs (encodec's use_lm=False), "encodec-lm"
    LM-codes (use_lm=True), the .tpk coders do not apply; ``channels="split"`` makes
    several token streams, which an .ecdc file cannot hold."""
    if coder not in ("auto", LM_CODER):
        raise UsageError(f"--entropy {coder} is for .tpk containers; an .ecdc file is "
                         f"bit-packed (auto) or LM-coded ({LM_CODER})")
    if channels == "split":
        raise UsageError(".ecdc holds one token stream: --channels split needs .tpk")
    return coder == LM_CODER


def is_ecdc(prefix: bytes) -> bool:
    """Whether data starting with ``prefix`` (4 bytes suffice) is an .ecdc file."""
    return prefix[:4] == MAGIC


@dataclass(frozen=True)
class EcdcInfo:
    """The header of an .ecdc file, checked against the model it names."""

    spec: ModelSpec
    audio_length: int  # samples at the model rate
    n_codebooks: int
    use_lm: bool
    header_size: int  # bytes: fixed part + metadata

    @property
    def model(self) -> str:
        return self.spec.name

    def segment_frames(self) -> Iterator[int]:
        """Frames of each segment, as encodec cuts the signal; lazily, as a header may
        claim 2^48 samples (billions of segments) in a few bytes."""
        spec, n = self.spec, self.audio_length
        if not spec.segmented:
            if n:
                yield frames_of(n, spec.hop_length)
            return
        for start in range(0, n, spec.segment_stride):
            yield frames_of(min(n - start, spec.segment_length), spec.hop_length)

    def totals(self) -> tuple[int, int]:
        """(chunks, frames) an EcdcReader yields, computed without enumerating segments."""
        spec, n = self.spec, self.audio_length
        if not spec.segmented:
            frames = frames_of(n, spec.hop_length)
            return -(-frames // spec.frames_per_chunk), frames
        length, stride = spec.segment_length, spec.segment_stride
        n_segments = -(-n // stride)
        full = (n - length) // stride + 1 if n >= length else 0
        frames = full * frames_of(length, spec.hop_length) + sum(
            frames_of(n - k * stride, spec.hop_length) for k in range(full, n_segments))  # <= 2
        per_chunk = spec.frames_per_chunk // frames_of(length, spec.hop_length)
        return -(-n_segments // per_chunk), frames

    def header(self) -> Header:
        """The equivalent .tpk header: model rate and channels are the source's."""
        spec = self.spec
        return Header(
            model_id=spec.name, weights_sha256=UNKNOWN_WEIGHTS,
            model_sample_rate=spec.sample_rate, hop_length=spec.hop_length,
            codebook_size=spec.codebook_size, n_codebooks=self.n_codebooks,
            model_channels=spec.channels, source_sample_rate=spec.sample_rate,
            source_channels=spec.channels, n_streams=1, channel_mode=ChannelMode.AS_IS,
            segment_length=spec.segment_length, segment_stride=spec.segment_stride,
            frames_per_chunk=spec.frames_per_chunk, resampler=Resampler.NONE,
            source_frames=self.audio_length, model_samples=self.audio_length,
        )


def frames_of(samples: int, hop: int) -> int:
    """Token frames of a segment of ``samples`` samples: ceil(samples / hop). (encodec's
    reader computes it in floating point, ceil(n / rate * frame_rate), which can be one
    more for some lengths; the writer's count is the encoder's, this one.)"""
    return -(-samples // hop)


class _Counting(_Source):
    """The .tpk reader's sequential reads (offsets, Truncated), plus the ``read(n)`` that
    encodec's BitUnpacker calls."""

    def read(self, n: int) -> bytes:
        return self.read_upto(n)


def _read_info(src: _Counting) -> EcdcInfo:
    from encodec.binary import read_ecdc_header

    fixed = src.read_exact(FIXED_HEADER.size, field="header", what="the 9-byte .ecdc header")
    magic, version, size = FIXED_HEADER.unpack(fixed)
    if magic != MAGIC:
        raise BadMagic(f"not an .ecdc file (starts with {magic!r}, expected {MAGIC!r})",
                       offset=0, field="magic")
    if version != VERSION:
        raise UnsupportedVersion(f"version {version}; only {VERSION} is known", offset=4,
                                 field="version")
    if size > MAX_METADATA_SIZE:
        raise FieldOutOfRange(f"{size} bytes of metadata (at most {MAX_METADATA_SIZE})",
                              offset=5, field="metadata size")
    meta = src.read_exact(size, field="metadata", what="the JSON metadata")
    try:
        metadata = read_ecdc_header(io.BytesIO(fixed + meta))
    except ValueError as exc:  # json's and UTF-8's errors are ValueErrors
        raise FormatError(f"not JSON: {' '.join(str(exc).split())}", offset=9,
                          field="metadata") from None
    except RecursionError:  # json parses nesting recursively: [[[[... 60,000 deep
        raise FormatError("JSON nested deeper than a parser goes (encodec writes a flat object)",
                          offset=9, field="metadata") from None
    return _checked_info(metadata, FIXED_HEADER.size + size)


def _checked_info(metadata: object, header_size: int) -> EcdcInfo:
    def bad(key: str, message: str) -> FormatError:
        return FieldOutOfRange(message, offset=9, field=f"metadata {key!r}")

    if not isinstance(metadata, dict):
        raise FormatError(f"a JSON {type(metadata).__name__}, not an object", offset=9,
                          field="metadata")
    for key, kind, what in (("m", str, "a string"), ("al", int, "an integer"),
                            ("nc", int, "an integer"), ("lm", bool, "true or false")):
        value = metadata.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad(key, f"{value!r} is not {what}"[:200] if key in metadata else "missing")
    name, length, n_codebooks = metadata["m"], metadata["al"], metadata["nc"]
    if name not in MODELS:
        raise UnsupportedFeature(f"unknown model {name[:40]!r}; known: {', '.join(MODELS)}",
                                 offset=9, field="metadata 'm'")
    spec = MODELS[name]
    if not 0 <= length <= MAX_AUDIO_LENGTH:
        raise bad("al", f"{length} is out of range 0..2^48")
    if not 1 <= n_codebooks <= spec.max_codebooks:
        raise bad("nc", f"{n_codebooks} is out of range 1..{spec.max_codebooks} for {name}")
    return EcdcInfo(spec, length, n_codebooks, metadata["lm"], header_size)


def read_ecdc_info(src: str | os.PathLike | BinaryIO) -> EcdcInfo:
    """The header of an .ecdc file (path or binary file object); typed errors."""
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            return _read_info(_Counting(f))
    return _read_info(_Counting(src))


class EcdcReader:
    """An .ecdc file as a .tpk ContainerReader presents a container: ``header``, the
    token chunks in order (iterate once), ``trailer``; the engine decodes either alike.

    Chunks hold ``frames_per_chunk`` frames (whole segments at 48 kHz), decoded as they
    are reached, so memory does not grow with the file. An LM-coded file loads the LM of
    its model (``lm_weights`` or the usual search; WeightsNotFound when absent).
    """

    def __init__(self, src: str | os.PathLike | BinaryIO, *, path: str | None = None,
                 lm_weights: str | os.PathLike | None = None) -> None:
        self._owned = isinstance(src, (str, os.PathLike))
        self.path = os.fsdecode(src) if self._owned and path is None else path
        self._file = open(src, "rb") if self._owned else src
        self._src = _Counting(self._file)
        try:
            self.info = _read_info(self._src)
            self.header = self.info.header()
            self._lm = self._load_lm(lm_weights) if self.info.use_lm else None
        except BaseException as exc:
            self.close()
            if isinstance(exc, FormatError) and exc.path is None:
                exc.path = self.path
            raise
        n_chunks, total_frames = self.info.totals()
        self.trailer = Trailer(n_chunks=n_chunks, total_frames=total_frames,
                               source_frames=self.info.audio_length,
                               model_samples=self.info.audio_length, token_digest=b"")

    def _load_lm(self, lm_weights) -> LoadedLM:
        from tokpack.codecs.encodec.lm import load_lm

        return load_lm(self.info.spec, lm_weights)

    def _chunk_plan(self) -> Iterator[list[tuple[int, int]]]:
        """Per chunk: (segment index, frames) of its segments (a 24 kHz file is one
        segment cut into chunks of frames_per_chunk frames); lazily."""
        spec = self.info.spec
        if not spec.segmented:
            total = self.trailer.total_frames
            for first in range(0, total, spec.frames_per_chunk):
                yield [(0, min(spec.frames_per_chunk, total - first))]
            return
        segments = enumerate(self.info.segment_frames())
        per_chunk = spec.frames_per_chunk // self.header.segment_frames
        while chunk := list(itertools.islice(segments, per_chunk)):
            yield chunk

    @property
    def bytes_read(self) -> int:
        return self._src.offset

    def __enter__(self) -> EcdcReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __iter__(self) -> Iterator[Chunk]:
        try:
            yield from self._chunks()
            extra = self._src.read(1)
            if extra:
                raise FormatError("data after the last segment", offset=self._src.offset - 1,
                                  field="codes")
        except FormatError as exc:
            if exc.path is None:
                exc.path = self.path
            raise

    def _chunks(self) -> Iterator[Chunk]:
        first_frame = 0
        run = None  # the 24 kHz file's one coded run, read across chunks
        for index, segments in enumerate(self._chunk_plan()):
            offset = self._src.offset
            tokens, scales, coded = [], [], 0
            for segment, n_frames in segments:
                if self.info.spec.segmented:
                    scales.append(self._scale(segment))
                    run = None
                start = self._src.offset
                if run is None:
                    run = self._run()
                tokens.append(self._read_codes(run, segment, n_frames))
                coded += self._src.offset - start
            frames = np.array([n for _, n in segments], dtype=np.int64)
            n_frames = int(frames.sum())
            yield Chunk(
                index=index, first_frame=first_frame, n_frames=n_frames, coder=-1,
                tokens=np.concatenate(tokens, axis=1)[None],
                segment_frames=frames if scales else None,
                scales=np.array(scales, dtype=np.float32)[:, None] if scales else None,
                offset=offset, size=self._src.offset - offset, coded_size=coded,
            )
            first_frame += n_frames

    def _scale(self, segment: int) -> float:
        data = self._src.read_exact(SCALE.size, field="scale", what=f"segment {segment}'s scale")
        (scale,) = SCALE.unpack(data)
        if not math.isfinite(scale):
            raise FieldOutOfRange(f"segment {segment}'s scale is {scale}",
                                  offset=self._src.offset - SCALE.size, field="scale")
        return scale

    def _run(self):
        """A reader of one segment's coded codes: LM decoder or encodec's BitUnpacker."""
        if self._lm is not None:
            from tokpack.codecs.encodec.lm import LMDecoder

            return LMDecoder(self._lm, self._src, self.info.n_codebooks)
        from encodec.binary import BitUnpacker

        return BitUnpacker(self.header.bits_per_code, self._src)

    def _read_codes(self, run, segment: int, n_frames: int) -> np.ndarray:
        """uint16 [n_codebooks, n_frames] from ``run``; Truncated when the data ends."""
        k = self.info.n_codebooks
        if self._lm is not None:
            try:
                return run.read(n_frames)
            except FormatError as exc:
                raise type(exc)(f"segment {segment}: {exc.message}", offset=self._src.offset,
                                field="codes") from None
        values = [run.pull() for _ in range(k * n_frames)]
        if values and values[-1] is None:
            done = values.index(None)
            raise Truncated(f"segment {segment}: data ends after {done} of {k * n_frames} codes",
                            offset=self._src.offset, field="codes")
        return np.array(values, dtype=np.uint16).reshape(n_frames, k).T


class EcdcWriter:
    """Writes an .ecdc file for ``header``'s model, codebooks and length, with the
    ContainerWriter interface the engine feeds (``write``, ``write_segment``, ``close``).

    The coded codes are kept in memory (bytes: ~2.7 MB an hour at 6 kbps) and the file is
    written whole on ``close``; after an exception nothing is written. ``lm``: LM-code the
    codes (``lm: true``) with this LM, else bit-pack them.
    """

    def __init__(self, dst: BinaryIO, header: Header, *, lm: LoadedLM | None = None) -> None:
        if header.n_streams != 1:
            raise ValueError(".ecdc holds one token stream")
        if header.model_samples is None:
            raise ValueError(".ecdc needs the length up front")
        self.header = header
        self._dst = dst
        self._lm = lm
        self._body = io.BytesIO()
        self._run = None
        self.bytes_written = 0

    def __enter__(self) -> EcdcWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def write(self, tokens: np.ndarray) -> None:
        """More frames of the one run (unsegmented models): uint16 [1, K, n]."""
        if self._run is None:
            self._run = self._new_run()
        self._push(tokens[0])

    def write_segment(self, tokens: np.ndarray, scales: np.ndarray) -> None:
        """One whole segment (segmented models): tokens [1, K, n], scales [1]."""
        self._end_run()
        self._body.write(SCALE.pack(float(scales[0])))
        self._run = self._new_run()
        self._push(tokens[0])
        self._end_run()

    def close(self) -> None:
        from encodec.binary import write_ecdc_header

        self._end_run()
        h = self.header
        metadata = {"m": h.model_id, "al": h.model_samples, "nc": h.n_codebooks,
                    "lm": self._lm is not None}  # encodec's keys, in its order
        out = io.BytesIO()
        write_ecdc_header(out, metadata)
        out.write(self._body.getbuffer())
        self._dst.write(out.getbuffer())
        self.bytes_written = out.tell()

    def _new_run(self):
        if self._lm is not None:
            from tokpack.codecs.encodec.lm import LMEncoder

            return LMEncoder(self._lm, self._body, self.header.n_codebooks)
        from encodec.binary import BitPacker

        return BitPacker(self.header.bits_per_code, self._body)

    def _push(self, codes: np.ndarray) -> None:
        if self._lm is not None:
            self._run.write(codes)
            return
        push = self._run.push
        for value in codes.T.reshape(-1).tolist():  # frame by frame, codebook by codebook
            push(value)

    def _end_run(self) -> None:
        if self._run is not None:
            self._run.flush()
            self._run = None
