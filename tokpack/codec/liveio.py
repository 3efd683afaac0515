"""Audio on pipes as it arrives: headerless PCM and WAV, read and written piece by piece.

Live mode (``encode --live`` / ``decode --live``) works with the tools people pipe audio
through: ``arecord``/``aplay``, ``sox -t raw``, ``ffmpeg -f s16le``. libsndfile needs to
seek, so it cannot read a WAV from a pipe as it arrives; this module parses the RIFF
header itself and then reads whatever the pipe holds (``read1``: one system call, no
waiting for a full buffer), so a 20 ms piece is encoded as soon as it is written.

Written (``audio.write_audio_blocks(live=True)``): headerless little-endian PCM, or a WAV
whose header declares an unknown length (``audio.wav_header`` of ``frames`` None: RIFF and
data sizes ``0xFFFFFFFF``, as ffmpeg and sox write to a pipe; aplay, sox, ffmpeg and
soundfile read it to the end of the data).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from tokpack.errors import AudioError

#: bytes asked of the pipe per read: returns sooner with what is there
READ_BYTES = 1 << 14
#: a WAV header longer than this (chunks before ``data``) is refused
MAX_HEADER_BYTES = 1 << 20
#: RIFF and data sizes a streaming writer puts in a header when the length is unknown
UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000, 0xFFFFFFFF - 8)
_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved little-endian samples: ``kind`` "int" (signed; unsigned for 8 bits, as
    WAV stores them) or "float", ``width`` bytes each."""

    sample_rate: int
    channels: int
    kind: str = "int"
    width: int = 2

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.width

    def to_float(self, data: bytes) -> np.ndarray:
        """Whole frames of ``data`` -> float32 [frames, channels] (full scale 1.0)."""
        if self.kind == "float":
            x = np.frombuffer(data, f"<f{self.width}").astype(np.float32)
        elif self.width == 1:
            x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128) / 128
        elif self.width == 3:
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            x = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float32) / 2**23
        else:
            x = np.frombuffer(data, f"<i{self.width}").astype(np.float32) / 2 ** (8 * self.width - 1)
        return x.reshape(-1, self.channels)


def raw_format(sample_rate: int, channels: int) -> PcmFormat:
    """Headerless 16-bit little-endian PCM (``--raw``), checked."""
    if not 1 <= sample_rate <= 768_000:
        raise AudioError(f"raw sample rate {sample_rate} is out of range 1..768000")
    if not 1 <= channels <= 1024:
        raise AudioError(f"raw channel count {channels} is out of range 1..1024")
    return PcmFormat(sample_rate, channels)


class PipeReader:
    """Audio from a pipe (or any binary file), in blocks of what has arrived.

    ``fmt`` None: a WAV (parsed here); else headerless PCM of that format. ``blocks()``
    yields float32 [n, channels] as soon as whole frames are in; :attr:`frames_read`
    counts them. A WAV whose data size is known stops there; one that declares an unknown
    size (see :data:`UNKNOWN_SIZES`) is read to the end of the input. A block with a
    NaN or infinite sample is an AudioError.
    """

    def __init__(self, f: BinaryIO, label: str, fmt: PcmFormat | None = None) -> None:
        self._f = f
        self.label = label
        self._raw_read = getattr(f, "read1", f.read)
        self.bytes_read = 0  # of the input, header included
        self._ahead = b""
        self._left: int | None = None  # data bytes still to read (None: to the end)
        self.frames_read = 0
        self.fmt = fmt if fmt is not None else self._wav_header()

    def _read(self, n: int) -> bytes:
        data = self._raw_read(n)
        self.bytes_read += len(data)
        return data

    def _take(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes of the header (AudioError if the input ends first)."""
        while len(self._ahead) < n:
            more = self._read(max(n - len(self._ahead), 1))
            if not more:
                raise AudioError(f"not a WAV file (and not --raw): the input ends in its {what}",
                                 path=self.label)
            self._ahead += more
        data, self._ahead = self._ahead[:n], self._ahead[n:]
        return data

    def _wav_header(self) -> PcmFormat:
        riff = self._take(12, "header")
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            raise AudioError("live input must be a WAV or headerless PCM (--raw --raw-rate HZ "
                             "--raw-channels N); this is neither", path=self.label)
        fmt = None
        used = 12
        while True:
            kind, size = struct.unpack("<4sI", self._take(8, "chunk list"))
            used += 8
            if kind == b"data":
                if fmt is None:
                    raise AudioError("WAV data comes before its fmt chunk", path=self.label)
                self._left = None if size in UNKNOWN_SIZES else size
                return fmt
            if used + size > MAX_HEADER_BYTES:
                raise AudioError(f"WAV chunk {kind!r} of {size} bytes before the data: more "
                                 f"than the {MAX_HEADER_BYTES} a live header may take",
                                 path=self.label)
            body = self._take(size + (size & 1), f"{kind.decode('latin-1')!r} chunk")
            used += len(body)
            if kind == b"fmt ":
                fmt = self._fmt(body[:size])

    def _fmt(self, body: bytes) -> PcmFormat:
        if len(body) < 16:
            raise AudioError(f"WAV fmt chunk of {len(body)} bytes (at least 16)", path=self.label)
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == _EXTENSIBLE and len(body) >= 26:
            tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first two bytes
        if tag == 1 and bits in (8, 16, 24, 32):
            kind = "int"
        elif tag == 3 and bits in (32, 64):
            kind = "float"
        else:
            raise AudioError(f"live WAV input must be 8/16/24/32-bit PCM or 32/64-bit float "
                             f"(format tag {tag}, {bits} bits)", path=self.label)
        if not (1 <= channels <= 1024 and 1 <= rate <= 768_000):
            raise AudioError(f"WAV header: {channels} channels at {rate} Hz is out of range",
                             path=self.label)
        return PcmFormat(rate, channels, kind, bits // 8)

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 [n, channels] blocks of the frames that have arrived, to the end."""
        fb = self.fmt.frame_bytes
        pending = self._ahead
        self._ahead = b""
        while True:
            if len(pending) < fb:
                want = READ_BYTES if self._left is None else min(READ_BYTES, self._left)
                more = self._read(want) if want > 0 else b""
                if not more:
                    return  # a partial frame at the end is dropped, as libsndfile does
                if self._left is not None:
                    self._left -= len(more)
                pending += more
                if len(pending) < fb:
                    continue
            whole = len(pending) // fb * fb
            block = self.fmt.to_float(pending[:whole])
            pending = pending[whole:]
            if not np.isfinite(block).all():
                raise AudioError(f"a NaN or infinite sample near frame {self.frames_read}",
                                 path=self.label)
            self.frames_read += block.shape[0]
            yield block

