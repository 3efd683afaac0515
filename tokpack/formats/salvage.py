"""Recover what is intact from a damaged or truncated container (``decode --salvage``).

The strict reader stops at the first error. Salvage reads the whole file into memory
(containers are small: 24 kbps is 3 KB per second of audio), keeps every chunk whose CRC
and contents check out, and reports the rest as damage with its chunk numbers and time
range. After a damaged chunk whose length field still fits the file, reading resumes right
after it (exactly one chunk lost). Otherwise the bytes are scanned for the next position
where a whole chunk validates; how many chunks that gap held is then taken from the END
chunk when it survived, else estimated as one.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from tokpack.errors import FormatError
from tokpack.formats import spec
from tokpack.formats.chunk import Chunk, Trailer, frame_seconds, tokens_payload_limit
from tokpack.formats.header import Header
from tokpack.formats.reader import ContainerReader, _ChunkParser, _Source

MAX_SALVAGE_BYTES = 2 * 2**30  # salvage holds the file in memory; refuse absurd sizes


@dataclass
class Damage:
    """A run of lost TOKENS chunks (``n_chunks`` may be an estimate, see ``exact``)."""

    first_chunk: int
    n_chunks: int
    offset: int  # where the damage was found
    reason: str
    exact: bool = True


@dataclass
class Salvaged:
    header: Header
    chunks: list[Chunk]  # intact TOKENS chunks, .index/.first_frame at their true positions
    damage: list[Damage] = field(default_factory=list)
    trailer: Trailer | None = None  # None when END was lost or the file was cut short
    truncated: bool = False

    @property
    def n_chunks(self) -> int:
        """TOKENS chunks the file had: END's count if it survived, else what was seen."""
        if self.trailer is not None:
            return self.trailer.n_chunks
        seen = [c.index + 1 for c in self.chunks] + [d.first_chunk + d.n_chunks for d in self.damage]
        return max(seen, default=0)

    def describe(self) -> list[str]:
        """One line per lost run: chunk numbers and time range."""
        h = self.header
        lines = []
        for d in self.damage:
            last = d.first_chunk + d.n_chunks - 1
            start = frame_seconds(h, d.first_chunk * h.frames_per_chunk)
            end = frame_seconds(h, (last + 1) * h.frames_per_chunk)
            which = f"chunk {d.first_chunk}" if d.n_chunks == 1 else f"chunks {d.first_chunk}-{last}"
            guess = "" if d.exact else " (count estimated)"
            lines.append(f"{which} lost{guess}, {start:.2f}-{end:.2f} s: {d.reason} (offset {d.offset})")
        if self.truncated:
            lines.append(f"file cut short after chunk {self.n_chunks - 1}: nothing after it could be read")
        return lines


def salvage(src: str | os.PathLike | BinaryIO) -> Salvaged:
    """Read a container leniently; a damaged header is still fatal (FormatError)."""
    if isinstance(src, (str, os.PathLike)):
        if os.path.getsize(src) > MAX_SALVAGE_BYTES:
            raise FormatError(f"file is larger than {MAX_SALVAGE_BYTES} bytes; salvage reads it whole")
        with open(src, "rb") as f:
            data = f.read()
    else:
        data = src.read(MAX_SALVAGE_BYTES + 1)
        if len(data) > MAX_SALVAGE_BYTES:
            raise FormatError(f"input is larger than {MAX_SALVAGE_BYTES} bytes; salvage reads it whole")
    header = ContainerReader(io.BytesIO(data)).header
    return _Scanner(header, data).run()


class _Scanner:
    def __init__(self, header: Header, data: bytes) -> None:
        self.header = header
        self.data = data
        self.limit = tokens_payload_limit(header, header.frames_per_chunk, header.segments_per_chunk)
        self.result = Salvaged(header, [])
        self.index = 0  # the TOKENS chunk expected next

    def run(self) -> Salvaged:
        pos = self.header_size()
        unknown_gap: Damage | None = None
        while pos < len(self.data):
            parsed = self.parse(pos)
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
                self.lose(pos, 1, self.reason(pos), exact=True)
                pos = framed_end
                continue
            nxt = self.resync(pos + 1)
            if nxt is None:
                self.result.truncated = True
                break
            unknown_gap = self.lose(pos, 1, "chunk framing damaged; resynchronised on the next valid chunk", exact=False)
            pos = nxt
        else:
            self.result.truncated = True
        if unknown_gap is not None and self.result.trailer is not None:
            self.settle_estimate(unknown_gap)
        return self.result

    def header_size(self) -> int:
        return struct.unpack_from("<H", self.data, 10)[0]

    def keep(self, chunk: Chunk) -> None:
        chunk.index = self.index
        chunk.first_frame = self.index * self.header.frames_per_chunk
        self.result.chunks.append(chunk)
        self.index += 1

    def lose(self, offset: int, n: int, reason: str, *, exact: bool) -> Damage:
        damage = Damage(self.index, n, offset, reason, exact)
        self.result.damage.append(damage)
        self.index += n
        return damage

    def settle_estimate(self, gap: Damage) -> None:
        """With END intact, the one estimated gap takes whatever chunks are unaccounted for."""
        missing = self.result.trailer.n_chunks - len(self.result.chunks) - sum(
            d.n_chunks for d in self.result.damage if d is not gap
        )
        if missing < 1:
            return
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

    def reason(self, pos: int) -> str:
        try:
            self.strict(pos)
        except FormatError as exc:
            return exc.message.split(": ", 1)[-1]
        return "damaged"

    def parse(self, pos: int):
        """(kind, value, end) if a whole valid chunk starts at ``pos``, else None."""
        try:
            return self.strict(pos)
        except FormatError:
            return None

    def strict(self, pos: int):
        if pos + spec.CHUNK_HEAD_SIZE > len(self.data):
            raise FormatError("cut short")
        chunk_type, param, count, length = struct.unpack_from(spec.CHUNK_HEAD_STRUCT, self.data, pos)
        end = pos + spec.CHUNK_FRAMING_SIZE + length
        if chunk_type not in (spec.ChunkType.TOKENS, spec.ChunkType.END) and chunk_type < spec.FIRST_OPTIONAL:
            raise FormatError(f"unknown chunk type 0x{chunk_type:02X}")
        if length > max(self.limit, spec.END_PAYLOAD_SIZE, spec.MAX_OPTIONAL_PAYLOAD) or end > len(self.data):
            raise FormatError("length runs past the end of the file")
        stored = struct.unpack_from("<I", self.data, end - spec.CHUNK_CRC_SIZE)[0]
        if zlib.crc32(memoryview(self.data)[pos : end - spec.CHUNK_CRC_SIZE]) != stored:
            raise FormatError("crc32 mismatch")
        parser = _ChunkParser(self.header, _Source(io.BytesIO(self.data[pos:end])))
        parser.index, parser.first_frame = self.index, self.index * self.header.frames_per_chunk
        head = self.data[pos : pos + spec.CHUNK_HEAD_SIZE]
        if chunk_type == spec.ChunkType.TOKENS:
            parser.src.read_upto(spec.CHUNK_HEAD_SIZE)
            return "tokens", parser.tokens(0, head, param, count, length), end
        if chunk_type == spec.ChunkType.END:
            parser.src.read_upto(spec.CHUNK_HEAD_SIZE)
            payload = parser.read_checked(head, length, "END chunk")
            if length != spec.END_PAYLOAD_SIZE:
                raise FormatError("END chunk of the wrong size")
            return "end", Trailer(*struct.unpack(spec.END_STRUCT, payload)), end
        return "optional", None, end

    def resync(self, start: int) -> int | None:
        """The next offset at which a whole TOKENS or END chunk validates."""
        for pos in range(start, len(self.data) - spec.CHUNK_FRAMING_SIZE + 1):
            if self.data[pos] in (spec.ChunkType.TOKENS, spec.ChunkType.END) and self.parse(pos) is not None:
                return pos
        return None
