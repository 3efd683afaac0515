"""Recover what is intact from a damaged or truncated container (``decode --salvage``).

The strict reader stops at the first error. Salvage reads the whole file into memory
(containers are small: 24 kbps is 3 KB per second of audio), keeps every chunk whose CRC
and contents check out, and reports the rest as damage with its chunk numbers and time
range. After a damaged chunk whose length field still fits the file, reading resumes right
after it (exactly one chunk lost). Otherwise the bytes are scanned for the next position
where a whole chunk validates; how many chunks that gap held is then taken from the END
chunk when it survived, else estimated as one.

A decoder reads the result through :class:`SalvageReader`: it decodes each run of intact
chunks, writes silence for the span of the lost ones, and keeps the signal's length
(a file cut short ends after the last chunk it holds).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from tokpack.errors import FormatError
from tokpack.formats import ctx, spec
from tokpack.formats.chunk import Chunk, Trailer, chunk_sample, encode_segment_table, tokens_payload_limit
from tokpack.formats.header import Header
from tokpack.formats.prior import PriorSource
from tokpack.formats.reader import ContainerReader, _ChunkParser, _Source

MAX_SALVAGE_BYTES = 2**30  # salvage holds the file in memory (once); 1 GiB is ~100 h at 24 kbps
# Resynchronising checks candidate chunks (offsets holding a TOKENS or END type byte); each
# check costs CANDIDATE_COST plus the bytes it reads (at most a chunk). The checks may cost
# RESYNC_WORK_FACTOR times the file's size (plus a chunk) in all, after which the rest of
# the file is given up (said, and treated as a cut-short end): crafted bytes cannot make the
# scan quadratic, nor slow beyond a few microseconds per byte.
RESYNC_WORK_FACTOR = 32
CANDIDATE_COST = 4096
MIN_CHUNK_BYTES = spec.CHUNK_FRAMING_SIZE + 1  # the fewest bytes a lost TOKENS chunk took


@dataclass
class Damage:
    """A run of lost TOKENS chunks (``n_chunks`` may be an estimate, see ``exact``)."""

    first_chunk: int
    n_chunks: int
    offset: int  # where the damage was found
    reason: str
    exact: bool = True
    span: int = 0  # bytes the damage covers: at most span // MIN_CHUNK_BYTES chunks were there


@dataclass
class LostRange:
    """Audio lost with a run of TOKENS chunks, in seconds of the signal. A salvage decode
    writes silence there, or, where the file was cut short, ends before it."""

    first_chunk: int
    n_chunks: int | None  # None: the file was cut short; how many chunks followed is unknown
    exact: bool  # False: n_chunks, and so end_s, are estimates
    start_s: float
    end_s: float | None  # None: cut short, and the signal's length was only in END
    reason: str
    offset: int | None  # where the damage was found; None: the end of the data

    def describe(self) -> str:
        if self.n_chunks is None:
            where = f"after chunk {self.first_chunk - 1}" if self.first_chunk else "before chunk 0"
            end = "?" if self.end_s is None else f"{self.end_s:.2f}"
            return f"file cut short {where}, {self.start_s:.2f}-{end} s: {self.reason}"
        last = self.first_chunk + self.n_chunks - 1
        which = f"chunk {self.first_chunk}" if self.n_chunks == 1 else f"chunks {self.first_chunk}-{last}"
        guess = "" if self.exact else " (count estimated)"
        return f"{which} lost{guess}, {self.start_s:.2f}-{self.end_s:.2f} s: {self.reason} (offset {self.offset})"


@dataclass(frozen=True)
class Extent:
    """What a decode of the salvaged chunks yields, in the terms of END's totals."""

    n_chunks: int  # TOKENS chunks the file held, lost ones included
    source_frames: int
    model_samples: int


@dataclass
class Salvaged:
    header: Header
    chunks: list[Chunk]  # intact TOKENS chunks, .index/.first_frame at their true positions
    damage: list[Damage] = field(default_factory=list)
    trailer: Trailer | None = None  # None when END was lost or the file was cut short
    truncated: bool = False
    notes: list[str] = field(default_factory=list)  # what else a salvage decode should say

    @property
    def n_chunks(self) -> int:
        """TOKENS chunks the file had: END's count if it survived (and the bytes could hold
        that many), else what was seen."""
        seen = max([c.index + 1 for c in self.chunks] + [d.first_chunk + d.n_chunks for d in self.damage],
                   default=0)
        return seen if self.trailer is None else min(self.trailer.n_chunks, seen)

    def extent(self) -> Extent:
        """The signal's length from the header or END, but never past what the chunks the
        file held could stand for; when the file was cut short, up to the end of the last
        chunk it holds (lost chunks before it included)."""
        h, n = self.header, self.n_chunks
        last = self.chunks[-1] if self.chunks else None
        reach = _end_sample(h, last) if last is not None and last.index == n - 1 else chunk_sample(h, n)
        if h.segmented and (last is None or last.index != n - 1):
            reach += h.segment_length - h.segment_stride  # a lost last chunk's overlap
        claimed = h.model_samples if h.model_samples is not None else (
            None if self.trailer is None else self.trailer.model_samples)
        model = reach if claimed is None else min(reach, claimed)
        source = -(-model * h.source_sample_rate // h.model_sample_rate)
        claimed = h.source_frames if h.source_frames is not None else (
            None if self.trailer is None else self.trailer.source_frames)
        return Extent(n, source if claimed is None else min(source, claimed), model)

    def lost(self) -> list[LostRange]:
        """Every lost run of chunks with its time range; a cut-short file's missing end last."""
        h = self.header
        rate = h.model_sample_rate
        total = h.model_samples
        if total is None and self.trailer is not None:
            total = self.trailer.model_samples

        def seconds(sample: int) -> float:
            return (sample if total is None else min(sample, total)) / rate

        ranges = [
            LostRange(d.first_chunk, d.n_chunks, d.exact, seconds(chunk_sample(h, d.first_chunk)),
                      seconds(chunk_sample(h, d.first_chunk + d.n_chunks)), d.reason, d.offset)
            for d in self.damage
        ]
        if self.truncated:
            ranges.append(LostRange(self.n_chunks, None, False, self.extent().model_samples / rate,
                                    None if total is None else total / rate,
                                    "nothing after it could be read", None))
        return ranges

    def describe(self) -> list[str]:
        """One line per lost run: chunk numbers and time range."""
        return [r.describe() for r in self.lost()]


def _end_sample(header: Header, chunk: Chunk) -> int:
    """Where the decoded signal of ``chunk`` ends, its last segment's overlap included."""
    if not header.segmented:
        return (chunk.first_frame + chunk.n_frames) * header.hop_length
    last_segment = chunk.index * header.segments_per_chunk + len(chunk.segment_frames) - 1
    return last_segment * header.segment_stride + int(chunk.segment_frames[-1]) * header.hop_length


class SalvageReader:
    """What salvage keeps, read as a decoder reads a ContainerReader: ``header``; the
    intact TOKENS chunks in order, whose ``index`` shows the gaps; and ``trailer``, here an
    :class:`Extent` known at once. ``lost`` says what is missing."""

    def __init__(
        self, src: str | os.PathLike | BinaryIO, *, priors: Sequence[PriorSource] = ()
    ) -> None:
        found = salvage(src, priors=priors)
        self.header = found.header
        self.trailer = found.extent()
        self.lost = found.lost()
        self.notes = found.notes
        self.intact = len(found.chunks)
        self._chunks = found.chunks

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._chunks)


def salvage(
    src: str | os.PathLike | BinaryIO, *, priors: Sequence[PriorSource] = ()
) -> Salvaged:
    """Read a container leniently; a damaged header is still fatal (FormatError), and so is
    a CTX prior that is not available (PriorNotFound)."""
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            data = _read_whole(f)
    else:
        data = _read_whole(src)
    header = ContainerReader(io.BytesIO(bytes(data[: spec.MAX_HEADER_SIZE]))).header
    return _Scanner(header, memoryview(data), priors).run()


def _read_whole(f: BinaryIO) -> bytearray:
    """All of ``f`` in one buffer (grown as data arrives), at most MAX_SALVAGE_BYTES."""
    data = bytearray()
    while block := f.read(1 << 20):
        data += block
        if len(data) > MAX_SALVAGE_BYTES:
            raise FormatError(f"input is larger than {MAX_SALVAGE_BYTES} bytes; salvage reads it whole")
    return data


class _View:
    """A file-like read() over part of the salvage buffer, copying only what is read."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += len(out)
        return out


class _Scanner:
    def __init__(self, header: Header, data: memoryview, priors: Sequence[PriorSource] = ()) -> None:
        self.header = header
        self.data = data
        self.priors = priors
        self.prior = None  # found once, at the first CTX chunk
        # the models kept chunks leave for a coder-4 chunk right after them
        self.carry = (ctx.Carry(header.codebook_size, header.n_streams, header.n_codebooks)
                      if header.ctx_keyframe > 1 else None)
        self.index_known = True
        self.prior_missing = False
        self.limit = tokens_payload_limit(header, header.frames_per_chunk, header.segments_per_chunk)
        self.result = Salvaged(header, [])
        self.index = 0  # the TOKENS chunk expected next
        self.digest = hashlib.blake2b(digest_size=spec.DIGEST_SIZE)  # of the chunks kept
        self.raw = data.obj  # the buffer itself, for find()
        self._types = (bytes([spec.ChunkType.TOKENS]), bytes([spec.ChunkType.END]))
        self.budget = RESYNC_WORK_FACTOR * len(data) + self.limit  # bytes resync may check

    def run(self) -> Salvaged:
        pos = self.header_size()
        unknown_gap: Damage | None = None
        while pos < len(self.data):
            parsed, why = self.attempt(pos)
            if parsed is None and self.carry is not None:
                self.carry.lose()  # a coder-4 chunk after this one cannot be decoded
            if parsed is not None:
                kind, value, end = parsed
                if kind == "tokens":
                    self.keep(value)
                elif kind == "end":
                    self.result.trailer = value
                    break
                pos = end
                continue
            framed_end = self.framed_end(pos)
            if framed_end is not None:  # framing intact, contents damaged: exactly one chunk lost
                self.lose(pos, 1, why, exact=True)
                pos = framed_end
                continue
            nxt = self.resync(pos + 1)
            if nxt is None:
                self.result.truncated = True
                break
            unknown_gap = self.lose(pos, 1, "chunk framing damaged; resynchronised on the next valid chunk",
                                    exact=False, span=nxt - pos)
            pos = nxt
        else:
            self.result.truncated = True
        if unknown_gap is not None and self.result.trailer is not None:
            self.settle_estimate(unknown_gap)
        self.check_trailer()
        return self.result

    def check_trailer(self) -> None:
        """Say where END disagrees with what was read: more chunks than the bytes could have
        held, or, with nothing lost, a token digest that does not match the chunks."""
        trailer, result = self.result.trailer, self.result
        if trailer is None:
            return
        if trailer.n_chunks > result.n_chunks:
            result.notes.append(
                f"END says {trailer.n_chunks} TOKENS chunks; the file can have held only "
                f"{result.n_chunks}: its lengths are not trusted"
            )
        elif not result.damage and trailer.token_digest != self.digest.digest():
            result.notes.append(
                "END's token digest does not match the chunks read: every chunk's CRC holds, but "
                "they are not the tokens END was written for (chunks swapped, or END from another file)"
            )

    def header_size(self) -> int:
        return struct.unpack_from("<H", self.data, 10)[0]

    def keep(self, chunk: Chunk) -> None:
        if chunk.segment_frames is not None:
            self.digest.update(encode_segment_table(chunk.segment_frames, chunk.scales))
        self.digest.update(chunk.tokens.astype("<u2").tobytes())
        chunk.index = self.index
        chunk.first_frame = self.index * self.header.frames_per_chunk
        self.result.chunks.append(chunk)
        self.index += 1

    def lose(self, offset: int, n: int, reason: str, *, exact: bool, span: int = 0) -> Damage:
        damage = Damage(self.index, n, offset, reason, exact, span)
        self.result.damage.append(damage)
        self.index += n
        self.index_known &= exact  # an estimate: which chunks are keyframes is not known
        return damage

    def settle_estimate(self, gap: Damage) -> None:
        """With END intact, the one estimated gap takes whatever chunks are unaccounted for."""
        missing = self.result.trailer.n_chunks - len(self.result.chunks) - sum(
            d.n_chunks for d in self.result.damage if d is not gap
        )
        if not 1 <= missing <= max(1, gap.span // MIN_CHUNK_BYTES):
            return  # END's count cannot be right: the estimate stands
        shift = missing - gap.n_chunks
        gap.n_chunks, gap.exact = missing, True
        for chunk in self.result.chunks:
            if chunk.index > gap.first_chunk:
                chunk.index += shift
                chunk.first_frame = chunk.index * self.header.frames_per_chunk
        for d in self.result.damage:
            if d.first_chunk > gap.first_chunk:
                d.first_chunk += shift

    def framed_end(self, pos: int) -> int | None:
        """End of a TOKENS chunk at ``pos`` whose type, count and length are plausible."""
        if pos + spec.CHUNK_HEAD_SIZE > len(self.data):
            return None
        chunk_type, _, count, length = struct.unpack_from(spec.CHUNK_HEAD_STRUCT, self.data, pos)
        end = pos + spec.CHUNK_FRAMING_SIZE + length
        plausible = (chunk_type == spec.ChunkType.TOKENS and 1 <= count <= self.header.frames_per_chunk
                     and length <= self.limit and end <= len(self.data))
        return end if plausible else None

    def attempt(self, pos: int):
        """((kind, value, end), None) if a whole valid chunk starts at ``pos``, else
        (None, why not): each offset is checked (and a CTX chunk decoded) once."""
        try:
            return self.strict(pos), None
        except FormatError as exc:
            return None, exc.message.split(": ", 1)[-1]

    def strict(self, pos: int):
        if pos + spec.CHUNK_HEAD_SIZE > len(self.data):
            raise FormatError("cut short")
        chunk_type, param, count, length = struct.unpack_from(spec.CHUNK_HEAD_STRUCT, self.data, pos)
        end = pos + spec.CHUNK_FRAMING_SIZE + length
        if chunk_type not in (spec.ChunkType.TOKENS, spec.ChunkType.END) and chunk_type < spec.FIRST_OPTIONAL:
            raise FormatError(f"unknown chunk type 0x{chunk_type:02X}")
        most = {spec.ChunkType.TOKENS: self.limit, spec.ChunkType.END: spec.END_PAYLOAD_SIZE}
        if length > most.get(chunk_type, spec.MAX_OPTIONAL_PAYLOAD) or end > len(self.data):
            raise FormatError("length runs past the end of the file")
        stored = struct.unpack_from("<I", self.data, end - spec.CHUNK_CRC_SIZE)[0]
        if zlib.crc32(self.data[pos : end - spec.CHUNK_CRC_SIZE]) != stored:
            raise FormatError("crc32 mismatch")
        if chunk_type >= spec.FIRST_OPTIONAL:
            return "optional", None, end
        parser = _ChunkParser(self.header, _Source(_View(self.data[pos:end])), self.priors)
        parser.index, parser.first_frame = self.index, self.index * self.header.frames_per_chunk
        parser.prior = self.prior
        parser.carry, parser.check_keyframes = self.carry, False
        parser.index_known, parser.prior_missing = self.index_known, self.prior_missing
        head = bytes(self.data[pos : pos + spec.CHUNK_HEAD_SIZE])
        if chunk_type == spec.ChunkType.TOKENS:
            parser.src.read_upto(spec.CHUNK_HEAD_SIZE)
            chunk = parser.tokens(0, head, param, count, length)
            self.prior, self.prior_missing = parser.prior, parser.prior_missing
            return "tokens", chunk, end
        if chunk_type == spec.ChunkType.END:
            parser.src.read_upto(spec.CHUNK_HEAD_SIZE)
            payload = parser.read_checked(head, length, "END chunk")
            if length != spec.END_PAYLOAD_SIZE:
                raise FormatError("END chunk of the wrong size")
            return "end", Trailer(*struct.unpack(spec.END_STRUCT, payload)), end
        raise FormatError("unknown chunk type")  # pragma: no cover - excluded above

    def resync(self, start: int) -> int | None:
        """The next offset at which a whole TOKENS or END chunk validates (None when there
        is none, or when the checks have used up their budget)."""
        last = len(self.data) - spec.CHUNK_FRAMING_SIZE
        pos = start
        following = dict.fromkeys(self._types, -2)  # each type byte's next offset (-1: none)
        while pos <= last:
            for t, at in following.items():  # found at C speed, each byte searched once
                if -1 < at < pos or at == -2:
                    following[t] = self.raw.find(t, pos, last + 1)
            found = [at for at in following.values() if at >= 0]
            if not found:
                return None
            pos = min(found)
            length = struct.unpack_from("<I", self.data, pos + 4)[0]
            self.budget -= CANDIDATE_COST
            end = pos + spec.CHUNK_FRAMING_SIZE + length
            if end <= len(self.data):
                self.budget -= spec.CHUNK_FRAMING_SIZE + length
                # the CRC first, inline: most candidates fail it, and cheaply
                crc_ok = zlib.crc32(self.data[pos : end - spec.CHUNK_CRC_SIZE]) == struct.unpack_from(
                    "<I", self.data, end - spec.CHUNK_CRC_SIZE)[0]
                if crc_ok and self.budget >= 0 and self.attempt(pos)[0] is not None:
                    return pos
            if self.budget < 0:
                self.result.notes.append(
                    f"gave up resynchronising at offset {pos}: the damaged bytes would take more "
                    f"checking than {RESYNC_WORK_FACTOR} times the file's size"
                )
                return None
            pos += 1
        return None
