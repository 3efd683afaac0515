"""ContainerReader: validate a container while reading it front to back, never seeking."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np

from tokpack.errors import (
    ChecksumMismatch,
    FieldOutOfRange,
    FormatError,
    PriorNotFound,
    Truncated,
    UnsupportedFeature,
)
from tokpack.formats import coding, ctx, prior, spec
from tokpack.formats.chunk import (
    Chunk,
    Trailer,
    chunk_label,
    covered_samples,
    segment_record,
    segment_table_size,
    tokens_payload_limit,
)
from tokpack.formats.header import Header, check_prefix, lengths_agree

_READ_BLOCK = 1 << 20  # allocate only as fast as data actually arrives
_CODERS = frozenset(int(coder) for coder in spec.Coder)


class _Source:
    """Sequential reads that count the offset and turn a short read into Truncated."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.offset = 0

    def read_upto(self, n: int) -> bytes:
        parts = []
        left = n
        while left:
            part = self.file.read(min(left, _READ_BLOCK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def read_exact(self, n: int, *, field: str, what: str) -> bytes:
        start = self.offset
        data = self.read_upto(n)
        if len(data) < n:
            raise Truncated(
                f"{what}: data ends after {len(data)} of {n} bytes", offset=start, field=field
            )
        return data

    def crc32_of_next(self, n: int, crc: int, *, field: str, what: str) -> int:
        """Consume ``n`` bytes without keeping them; return the CRC-32 continued over them."""
        start = self.offset
        left = n
        while left:
            block = self.read_upto(min(left, _READ_BLOCK))
            if not block:
                raise Truncated(
                    f"{what}: data ends after {n - left} of {n} bytes", offset=start, field=field
                )
            crc = zlib.crc32(block, crc)
            left -= len(block)
        return crc


class ContainerReader:
    """Read a container from a path or a binary file object (a pipe is fine).

    The header is read and validated at once; iterating yields validated TOKENS chunks,
    then checks END (setting :attr:`trailer`) and that nothing follows it.
    """

    def __init__(
        self,
        src: str | os.PathLike | BinaryIO,
        *,
        path: str | None = None,
        priors: Sequence[prior.PriorSource] = (),
    ) -> None:
        self._priors = priors
        self._owned = isinstance(src, (str, os.PathLike))
        self.path = os.fsdecode(src) if self._owned and path is None else path
        self._file: BinaryIO = open(src, "rb") if self._owned else src
        self._src = _Source(self._file)
        self.trailer: Trailer | None = None
        self._started = False
        self._parser: _ChunkParser | None = None
        try:
            self.header = self._read_header()
        except BaseException as error:
            if isinstance(error, FormatError):
                error.path = self.path
            self.close()
            raise

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (the file size once iteration has finished)."""
        return self._src.offset

    def close(self) -> None:
        if self._owned:
            self._file.close()

    @property
    def live(self) -> bool:
        """Whether a ``LIVE`` chunk was read (a 1.3 file written live): a ``LAST`` chunk
        will say which TOKENS chunk is the last before it comes (FORMAT.md "Live
        containers"). Known once iteration has begun."""
        return self._parser is not None and self._parser.live

    @property
    def last(self) -> tuple[int, int] | None:
        """``(source_frames, model_samples)`` from the ``LAST`` chunk once it was read:
        at most one more TOKENS chunk follows, and END will hold these lengths."""
        return None if self._parser is None else self._parser.last

    def __iter__(self) -> Iterator[Chunk]:
        if self._started:
            raise ValueError("a ContainerReader yields its chunks once")
        self._started = True
        return self._chunks()

    def _read_header(self) -> Header:
        prefix = self._src.read_upto(spec.HEADER_PREFIX_SIZE)
        header_size = check_prefix(prefix)
        rest = self._src.read_exact(header_size - len(prefix), field="header", what="header")
        return Header.from_bytes(prefix + rest)

    def _chunks(self) -> Iterator[Chunk]:
        parser = self._parser = _ChunkParser(self.header, self._src, self._priors)
        try:
            yield from parser.chunks()
        except FormatError as error:
            error.path = self.path
            raise
        self.trailer = parser.trailer


class _ChunkParser:
    """The chunk sequence rules, with the running state they need."""

    def __init__(
        self, header: Header, src: _Source, priors: Sequence[prior.PriorSource] = ()
    ) -> None:
        self.header = header
        self.src = src
        self.priors = priors
        self.prior: prior.Prior | None = None  # resolved at the first CTX chunk
        self.digest = hashlib.blake2b(digest_size=spec.DIGEST_SIZE)
        self.index = 0  # TOKENS chunks so far
        self.first_frame = 0
        self.segments = 0
        self.last_segment_frames = header.segment_frames
        self.short_chunk: str | None = None  # why the previous TOKENS chunk must be the last
        self.trailer: Trailer | None = None
        self.knows_live = header.version_minor >= spec.LIVE_MINOR
        self.live = False  # a LIVE chunk was read
        self.last: tuple[int, int] | None = None  # LAST's (source_frames, model_samples)
        self.tokens_after_last = 0
        self.records = 0  # chunks met so far, the current one included
        # the models TOKENS chunks leave for coder 4 (a 1.4 file with keyframes apart)
        self.carry = (ctx.Carry(header.codebook_size, header.n_streams, header.n_codebooks)
                      if header.ctx_keyframe > 1 else None)
        self.check_keyframes = True  # salvage does not: a lost run blurs the indices
        self.index_known = True  # salvage: False after a run of lost chunks of unknown size
        self.prior_missing = False  # the header's prior was looked for and is not here

    def chunks(self) -> Iterator[Chunk]:
        while True:
            offset = self.src.offset
            head = self.src.read_upto(spec.CHUNK_HEAD_SIZE)
            if len(head) < spec.CHUNK_HEAD_SIZE:
                what = "chunk header cut short" if head else "data ends before the END chunk"
                raise Truncated(what, offset=offset, field="chunk_type")
            chunk_type, param, count, length = struct.unpack(spec.CHUNK_HEAD_STRUCT, head)
            self.records += 1
            if chunk_type == spec.ChunkType.TOKENS:
                if self.last is not None and self.tokens_after_last:
                    raise FieldOutOfRange(
                        f"TOKENS chunk {self.index} comes after the one the LAST chunk "
                        "announced as the last", offset=offset, field="chunk_type")
                yield self.tokens(offset, head, param, count, length)
                self.tokens_after_last += self.last is not None
            elif chunk_type == spec.ChunkType.END:
                if self.live and self.last is None:
                    raise FieldOutOfRange("the file was written live (LIVE chunk) but has "
                                          "no LAST chunk before END", offset=offset,
                                          field="chunk_type")
                self.trailer = self.end(offset, head, param, count, length)
                if self.last is not None and self.last != (self.trailer.source_frames,
                                                           self.trailer.model_samples):
                    raise FieldOutOfRange(
                        f"END chunk: lengths {self.trailer.source_frames}/"
                        f"{self.trailer.model_samples} differ from the LAST chunk's "
                        f"{self.last[0]}/{self.last[1]}",
                        offset=offset + spec.CHUNK_HEAD_SIZE + spec.END_OFFSET["source_frames"],
                        field="source_frames")
                if self.src.read_upto(1):
                    raise FormatError(
                        "data continues after the END chunk",
                        offset=self.src.offset - 1,
                        field="end of file",
                    )
                return
            elif self.knows_live and chunk_type in (spec.LIVE_CHUNK, spec.LAST_CHUNK):
                self.live_chunk(offset, head, chunk_type, param, count, length)
            elif chunk_type >= spec.FIRST_OPTIONAL:
                self.skip_optional(offset, head, chunk_type, length)
            elif chunk_type >= spec.FIRST_RESERVED_CRITICAL:
                raise UnsupportedFeature(
                    f"critical chunk type 0x{chunk_type:02X} is not known to this reader "
                    "(a newer writer's feature this reader cannot ignore)",
                    offset=offset,
                    field="chunk_type",
                )
            else:
                raise FieldOutOfRange(
                    "chunk type 0x00 is never valid", offset=offset, field="chunk_type"
                )

    def read_checked(self, head: bytes, length: int, what: str) -> bytes:
        """Read the payload and the CRC-32 after it; return the payload if the CRC matches."""
        payload = self.src.read_exact(length, field="payload", what=what)
        self.check_crc(zlib.crc32(payload, zlib.crc32(head)), what)
        return payload

    def check_crc(self, computed: int, what: str) -> None:
        crc_offset = self.src.offset
        (stored,) = struct.unpack(
            "<I", self.src.read_exact(spec.CHUNK_CRC_SIZE, field="crc32", what=what)
        )
        if stored != computed:
            raise ChecksumMismatch(
                f"{what} is corrupt (stored 0x{stored:08x}, computed 0x{computed:08x})",
                offset=crc_offset,
                field="crc32",
            )

    def tokens(self, offset: int, head: bytes, param: int, count: int, length: int) -> Chunk:
        header = self.header
        per_chunk = header.frames_per_chunk
        label = chunk_label(
            header, self.index, self.first_frame, count if 1 <= count <= per_chunk else None
        )
        limit = tokens_payload_limit(header, per_chunk, header.segments_per_chunk)
        if length > limit:
            raise FieldOutOfRange(
                f"{label}: {length} bytes, more than the {limit} any chunk of this file can need",
                offset=offset + 4,
                field="payload_length",
            )
        payload = self.read_checked(head, length, label)
        if self.short_chunk is not None:
            raise FieldOutOfRange(
                f"{label} follows {self.short_chunk}: only the last TOKENS chunk may be short",
                offset=offset,
                field="chunk_type",
            )
        if not 1 <= count <= per_chunk:
            raise FieldOutOfRange(
                f"{label}: {count} frames is out of range 1..{per_chunk} (frames_per_chunk)",
                offset=offset + 2,
                field="count",
            )
        if param not in _CODERS:
            raise UnsupportedFeature(
                f"{label}: coder {param} is not known to this reader (known: 0..{max(spec.Coder)})",
                offset=offset + 1,
                field="param",
            )
        segment_frames = scales = None
        table_size = 0
        if header.segmented:
            segment_frames, scales = self.segment_table(offset, payload, count, label)
            table_size = segment_table_size(len(segment_frames), header.n_streams)
        limit = tokens_payload_limit(header, count, len(segment_frames) if header.segmented else 0)
        if length > limit:
            raise FieldOutOfRange(
                f"{label}: {length} bytes, more than the {limit} its frames can need",
                offset=offset + 4,
                field="payload_length",
            )
        shape = (header.n_streams, header.n_codebooks, count)
        rows = None
        keyframe = self.index % header.ctx_keyframe == 0
        if param == spec.Coder.CTX_CARRY:
            rows = self.carried_rows(offset, label, keyframe)
        elif param == spec.Coder.CTX and not keyframe and self.check_keyframes:
            raise FieldOutOfRange(
                f"{label}: lies between keyframes (ctx_keyframe {header.ctx_keyframe}), where "
                "CTX models carry on: coder CTX_CARRY, not CTX", offset=offset + 1, field="param")
        if param in (spec.Coder.CTX, spec.Coder.CTX_CARRY):
            least = ctx.min_bytes(shape, header.codebook_size)
            if length - table_size < least:
                raise FieldOutOfRange(
                    f"{label}: {length - table_size} bytes of CTX data for {int(np.prod(shape))} "
                    f"tokens; CTX takes at least {least} (bounded work per byte)",
                    offset=offset + 4,
                    field="payload_length",
                )
        coded_offset = offset + spec.CHUNK_HEAD_SIZE + table_size
        values = coding.decode(
            spec.Coder(param),
            payload[table_size:],
            shape,
            header.bits_per_code,
            offset=coded_offset,
            context=label,
            prior=self.ctx_prior(offset, label)
            if param in (spec.Coder.CTX, spec.Coder.CTX_CARRY) else None,
            codebook_size=header.codebook_size,
            rows=rows,
        )
        if values.max() >= header.codebook_size:
            first_bad = int(np.argmax(values >= header.codebook_size))
            stream, codebook, frame = np.unravel_index(first_bad, shape)
            raise FieldOutOfRange(
                f"{label}: token {values[first_bad]} at stream {stream}, codebook {codebook}, "
                f"frame {self.first_frame + frame} is not below codebook_size "
                f"{header.codebook_size}",
                offset=coded_offset,
                field="tokens",
            )
        if header.segmented:
            if len(segment_frames) < header.segments_per_chunk:
                self.short_chunk = f"TOKENS chunk {self.index} of {len(segment_frames)} segments"
        elif count < per_chunk:
            self.short_chunk = f"TOKENS chunk {self.index} of {count} frames"
        if self.carry is not None:
            self.carry.end(values.reshape(shape), param, self.carry_prior(offset, label),
                           keyframe=keyframe if self.index_known else None, rows=rows)
        self.digest.update(payload[:table_size])
        self.digest.update(values.astype("<u2").tobytes())
        chunk = Chunk(
            index=self.index,
            first_frame=self.first_frame,
            n_frames=count,
            coder=spec.Coder(param),
            tokens=values.reshape(shape),
            segment_frames=segment_frames,
            scales=scales,
            offset=offset,
            size=spec.CHUNK_FRAMING_SIZE + length,
            coded_size=length - table_size,
        )
        self.index += 1
        self.first_frame += count
        return chunk

    def carry_prior(self, offset: int, label: str) -> prior.Prior | None:
        """The prior, for the models every chunk of a carrying file leaves; None if it is
        not here (then only a coder-4 chunk fails, with PriorNotFound)."""
        if self.prior is None and not self.prior_missing:
            try:
                self.ctx_prior(offset, label)
            except PriorNotFound:
                self.prior_missing = True
        return self.prior

    def carried_rows(self, offset: int, label: str, keyframe: bool) -> list:
        """The models a coder-4 chunk starts from, after its checks (FORMAT.md "Carried
        models")."""
        header = self.header
        if header.version_minor < spec.CARRY_MINOR:
            raise FieldOutOfRange(
                f"{label}: coder CTX_CARRY needs a version 1.{spec.CARRY_MINOR} header (this one "
                f"is 1.{header.version_minor})", offset=offset + 1, field="param")
        if self.check_keyframes and keyframe:
            raise FieldOutOfRange(
                f"{label}: is a keyframe (ctx_keyframe {header.ctx_keyframe}): its CTX models "
                "start afresh, so it must not use coder CTX_CARRY", offset=offset + 1,
                field="param")
        self.ctx_prior(offset, label)  # PriorNotFound here if it is missing
        rows = None if self.carry is None else self.carry.begin()
        if rows is None:
            raise FieldOutOfRange(f"{label}: its CTX models continue from a lost chunk",
                                  offset=offset + 1, field="param")
        return rows

    def ctx_prior(self, offset: int, label: str) -> prior.Prior:
        """The prior the header names, found once; PriorNotFound if it is not available."""
        header = self.header
        if header.version_minor == 0:
            raise FieldOutOfRange(
                f"{label}: coder CTX needs a version 1.1 header (this one is 1.0)",
                offset=offset + 1,
                field="param",
            )
        if self.prior is None:
            found = prior.resolve(
                header.prior_sha256,
                self.priors,
                codebook_size=header.codebook_size,
                n_codebooks=header.n_codebooks,
            )
            if found.codebook_size != header.codebook_size or found.n_codebooks < header.n_codebooks:
                raise FieldOutOfRange(
                    f"the prior {header.prior_sha256.hex()} has {found.n_codebooks} codebook(s) "
                    f"of {found.codebook_size} codes; the header needs {header.n_codebooks} of "
                    f"{header.codebook_size}",
                    offset=spec.HEADER_OFFSET["prior_sha256"],
                    field="prior_sha256",
                )
            self.prior = found
        return self.prior

    def segment_table(
        self, offset: int, payload: bytes, count: int, label: str
    ) -> tuple[np.ndarray, np.ndarray]:
        header = self.header
        table_offset = offset + spec.CHUNK_HEAD_SIZE
        if len(payload) < spec.SEGMENT_COUNT_SIZE:
            raise FieldOutOfRange(
                f"{label}: payload of {len(payload)} bytes has no segment table",
                offset=offset + 4,
                field="payload_length",
            )
        (n_segments,) = struct.unpack_from(spec.SEGMENT_COUNT_STRUCT, payload)
        most = min(header.segments_per_chunk, count)
        if not 1 <= n_segments <= most:
            raise FieldOutOfRange(
                f"{label}: {n_segments} segments is out of range 1..{most}",
                offset=table_offset,
                field="n_segments",
            )
        table_size = segment_table_size(n_segments, header.n_streams)
        if table_size > len(payload):
            raise FieldOutOfRange(
                f"{label}: payload of {len(payload)} bytes is shorter than its "
                f"{table_size}-byte segment table",
                offset=offset + 4,
                field="payload_length",
            )
        record = segment_record(header.n_streams)
        records = np.frombuffer(
            payload, dtype=record, count=n_segments, offset=spec.SEGMENT_COUNT_SIZE
        )
        frames = records["frames"].astype(np.int64)
        scales = records["scales"].astype(np.float32)

        def record_offset(i: int) -> int:
            return table_offset + spec.SEGMENT_COUNT_SIZE + i * record.itemsize

        ceiling = np.concatenate([[self.last_segment_frames], frames[:-1]])
        bad = np.flatnonzero((frames < 1) | (frames > ceiling))
        if bad.size:
            i = int(bad[0])
            raise FieldOutOfRange(
                f"{label}: segment {self.segments + i} has {frames[i]} frames; a segment has "
                f"1..{header.segment_frames} and never more than the segment before it "
                f"({ceiling[i]})",
                offset=record_offset(i),
                field="segment.frames",
            )
        bad = np.argwhere(~(np.isfinite(scales) & (scales > 0)))
        if bad.size:
            i, stream = (int(v) for v in bad[0])
            raise FieldOutOfRange(
                f"{label}: segment {self.segments + i} stream {stream} scale {scales[i, stream]!r} "
                "must be finite and > 0",
                offset=record_offset(i) + spec.SEGMENT_FRAMES_SIZE + stream * spec.SCALE_SIZE,
                field="segment.scale",
            )
        if int(frames.sum()) != count:
            raise FieldOutOfRange(
                f"{label}: its segments hold {int(frames.sum())} frames, the chunk says {count}",
                offset=offset + 2,
                field="count",
            )
        self.segments += n_segments
        self.last_segment_frames = int(frames[-1])
        return frames, scales

    def end(self, offset: int, head: bytes, param: int, count: int, length: int) -> Trailer:
        if length != spec.END_PAYLOAD_SIZE:
            raise FieldOutOfRange(
                f"END chunk payload is {length} bytes, must be {spec.END_PAYLOAD_SIZE}",
                offset=offset + 4,
                field="payload_length",
            )
        payload = self.read_checked(head, length, "END chunk")
        for name, value, at in (("param", param, 1), ("count", count, 2)):
            if value:
                raise FieldOutOfRange(
                    f"END chunk: reserved, must be 0 (got {value})", offset=offset + at, field=name
                )
        trailer = Trailer(*struct.unpack(spec.END_STRUCT, payload))
        payload_offset = offset + spec.CHUNK_HEAD_SIZE

        def out_of_range(name: str, message: str) -> FieldOutOfRange:
            return FieldOutOfRange(
                f"END chunk: {message}", offset=payload_offset + spec.END_OFFSET[name], field=name
            )

        if trailer.n_chunks != self.index:
            raise out_of_range(
                "n_chunks", f"says {trailer.n_chunks} TOKENS chunks, the file has {self.index}"
            )
        if trailer.total_frames != self.first_frame:
            raise out_of_range(
                "total_frames",
                f"says {trailer.total_frames} frames, the chunks hold {self.first_frame}",
            )
        for name in ("source_frames", "model_samples"):
            value, in_header = getattr(trailer, name), getattr(self.header, name)
            if value > spec.MAX_LENGTH:
                raise out_of_range(
                    name, f"{value} is out of range 0..2^48 (END values are always known)"
                )
            if in_header is not None and value != in_header:
                raise out_of_range(name, f"{value} contradicts the header's {in_header}")
        header = self.header
        covered = covered_samples(header, self.first_frame, self.segments, self.last_segment_frames)
        if trailer.model_samples > covered:
            raise out_of_range(
                "model_samples",
                f"{trailer.model_samples} samples, more than the {covered} the file's "
                f"{self.first_frame} frames stand for",
            )
        if not lengths_agree(trailer.source_frames, trailer.model_samples,
                             header.source_sample_rate, header.model_sample_rate):
            raise out_of_range(
                "source_frames",
                f"{trailer.source_frames} frames at {header.source_sample_rate} Hz is longer than "
                f"the {trailer.model_samples} model samples at {header.model_sample_rate} Hz",
            )
        computed = self.digest.digest()
        if trailer.token_digest != computed:
            raise ChecksumMismatch(
                f"END chunk: token digest {trailer.token_digest.hex()} does not match "
                f"the tokens read ({computed.hex()})",
                offset=payload_offset + spec.END_OFFSET["token_digest"],
                field="token_digest",
            )
        return trailer

    def live_chunk(self, offset: int, head: bytes, chunk_type: int, param: int, count: int,
                   length: int) -> None:
        """A LIVE or LAST chunk (FORMAT.md "Live containers"), checked where it stands."""
        name = "LIVE" if chunk_type == spec.LIVE_CHUNK else "LAST"
        size = 0 if chunk_type == spec.LIVE_CHUNK else spec.LAST_PAYLOAD_SIZE
        if length != size:
            raise FieldOutOfRange(f"{name} chunk payload is {length} bytes, must be {size}",
                                  offset=offset + 4, field="payload_length")
        payload = self.read_checked(head, length, f"{name} chunk")
        for field, value, at in (("param", param, 1), ("count", count, 2)):
            if value:
                raise FieldOutOfRange(f"{name} chunk: reserved, must be 0 (got {value})",
                                      offset=offset + at, field=field)

        def misplaced(why: str) -> FieldOutOfRange:
            return FieldOutOfRange(f"{name} chunk {why}", offset=offset, field="chunk_type")

        header = self.header
        if chunk_type == spec.LIVE_CHUNK:
            if self.records != 1:
                raise misplaced("is not the first chunk after the header")
            if header.segmented:
                raise misplaced("in a segmented file (live containers are unsegmented)")
            self.live = True
            return
        if not self.live:
            raise misplaced("in a file without a LIVE chunk")
        if self.last is not None:
            raise misplaced("comes twice")
        source_frames, model_samples = struct.unpack(spec.LAST_STRUCT, payload)
        at = offset + spec.CHUNK_HEAD_SIZE
        for field, value in (("source_frames", source_frames), ("model_samples", model_samples)):
            if value > spec.MAX_LENGTH:
                raise FieldOutOfRange(f"LAST chunk: {field} {value} is out of range 0..2^48",
                                      offset=at + spec.LAST_OFFSET[field], field=field)
            in_header = getattr(header, field)
            if in_header is not None and value != in_header:
                raise FieldOutOfRange(f"LAST chunk: {field} {value} contradicts the "
                                      f"header's {in_header}",
                                      offset=at + spec.LAST_OFFSET[field], field=field)
        before = self.first_frame * header.hop_length
        if model_samples < before:
            raise FieldOutOfRange(
                f"LAST chunk: {model_samples} model samples, fewer than the {before} the "
                f"{self.first_frame} frames before it stand for",
                offset=at + spec.LAST_OFFSET["model_samples"], field="model_samples")
        if not lengths_agree(source_frames, model_samples, header.source_sample_rate,
                             header.model_sample_rate):
            raise FieldOutOfRange(
                f"LAST chunk: {source_frames} frames at {header.source_sample_rate} Hz is "
                f"longer than the {model_samples} model samples at "
                f"{header.model_sample_rate} Hz",
                offset=at + spec.LAST_OFFSET["source_frames"], field="source_frames")
        self.last = (source_frames, model_samples)

    def skip_optional(self, offset: int, head: bytes, chunk_type: int, length: int) -> None:
        what = f"optional chunk 0x{chunk_type:02X}"
        if length > spec.MAX_OPTIONAL_PAYLOAD:
            raise FieldOutOfRange(
                f"{what}: {length} bytes is more than the {spec.MAX_OPTIONAL_PAYLOAD} allowed",
                offset=offset + 4,
                field="payload_length",
            )
        computed = self.src.crc32_of_next(length, zlib.crc32(head), field="payload", what=what)
        self.check_crc(computed, what)
