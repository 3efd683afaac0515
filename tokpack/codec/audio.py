"""Audio file I/O (soundfile only) and the one pinned resampler.

Every entry point takes a path or a binary file object. libsndfile needs to seek, so a
file object that cannot (a pipe) is first read into memory; callers reading stdin pass
``io.BytesIO(sys.stdin.buffer.read())`` anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from tokpack._io import atomic_write, cannot_write
from tokpack.errors import AudioError

if TYPE_CHECKING:
    import torch

AudioSource = str | os.PathLike | BinaryIO

#: Frames read per block: bounds the float64 temporaries and finds NaN early.
READ_BLOCK_FRAMES = 1 << 18

#: The one resampling method, pinned so containers decode the same everywhere
#: (container resampler id 1).
RESAMPLE_KW = {"lowpass_filter_width": 6, "rolloff": 0.99, "resampling_method": "sinc_interp_hann"}

SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
FORMATS = {".wav": "WAV", ".flac": "FLAC", ".raw": "RAW", ".pcm": "RAW"}


@dataclass(frozen=True)
class AudioInfo:
    """What was read: the source's rate, channels, length, and the file's format."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    bytes: int | None  # size of the file, when known


def source_label(src: object, name: str | None = None) -> str:
    """How errors name an input: its path, or the file object's name, or '-'."""
    if name is not None:
        return name
    if isinstance(src, (str, os.PathLike)):
        return os.fsdecode(src)
    label = getattr(src, "name", None)
    return label if isinstance(label, str) else "-"


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _size_of(src: AudioSource) -> int | None:
    if isinstance(src, (str, os.PathLike)):
        try:
            return os.path.getsize(src)
        except OSError:
            return None
    if isinstance(src, io.BytesIO):
        return src.getbuffer().nbytes
    try:
        pos = src.tell()
        end = src.seek(0, io.SEEK_END)
        src.seek(pos)
        return end
    except (AttributeError, OSError, ValueError):
        return None


#: libsndfile's words for some failures, and what they mean for a user
_SF_MEANINGS = {
    "Internal error : SF_INFO struct incomplete":
        "the header declares a sample rate or channel count of 0",
}


def _sf_reason(exc: Exception) -> str:
    reason = " ".join(str(getattr(exc, "error_string", None) or exc).split()).rstrip(".")
    return _SF_MEANINGS.get(reason, reason)


class AudioReader:
    """An audio file opened for reading in blocks of float32 ``[frames, channels]``.

    ``info.frames`` is the length the file declares (libsndfile's count); the blocks run
    to the end of the data, and :attr:`frames_read` says how many there were. A block
    with a NaN or infinite sample raises AudioError naming the file and the first bad
    sample's frame, time and channel. Errors opening the file are AudioErrors too.
    """

    def __init__(self, src: AudioSource, *, name: str | None = None, raw=None) -> None:
        """``raw``: a :class:`tokpack.codec.liveio.PcmFormat` for headerless 16-bit
        little-endian PCM (libsndfile reads it as RAW)."""
        self.label = source_label(src, name)
        self._raw = raw
        if not isinstance(src, (str, os.PathLike)) and not _seekable(src):
            src = io.BytesIO(src.read())  # libsndfile needs to seek
        if isinstance(src, (str, os.PathLike)):
            try:  # libsndfile says only "System error" for a missing or unreadable file
                with open(src, "rb"):
                    pass
            except OSError as exc:
                raise AudioError(f"cannot open: {exc.strerror or exc}", path=self.label) from None
        self._src = src
        self._start = None if isinstance(src, (str, os.PathLike)) else src.tell()
        size = _size_of(src)
        self._file = self._open()
        f = self._file
        if f.samplerate <= 0 or f.channels <= 0:
            f.close()
            raise AudioError(f"invalid sample rate {f.samplerate} or channel count {f.channels}",
                             path=self.label)
        self.info = AudioInfo(f.samplerate, f.channels, max(int(f.frames), 0), f.format,
                              f.subtype, size)
        self.frames_read = 0

    def _open(self):
        import soundfile as sf

        raw = {} if self._raw is None else {
            "samplerate": self._raw.sample_rate, "channels": self._raw.channels,
            "subtype": "PCM_16", "endian": "LITTLE", "format": "RAW"}
        try:
            return sf.SoundFile(self._src, **raw)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioError(f"cannot read audio: {_sf_reason(exc)}", path=self.label) from None
        except OSError as exc:
            raise AudioError(f"cannot open: {exc.strerror or exc}", path=self.label) from None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def blocks(self, frames: int | None = None) -> Iterator[np.ndarray]:
        """float32 [n, channels] blocks (``READ_BLOCK_FRAMES`` frames) to the end of the data."""
        import soundfile as sf

        n = READ_BLOCK_FRAMES if frames is None else frames
        while True:
            try:
                block = self._file.read(n, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"cannot read audio: {_sf_reason(exc)}",
                                 path=self.label) from None
            if block.shape[0] == 0:
                return
            _check_finite(block, self.frames_read, self.info.sample_rate, self.label)
            self.frames_read += block.shape[0]
            yield block

    def rewind(self) -> None:
        """Start reading again from the first frame."""
        self._file.close()
        if self._start is not None:
            self._src.seek(self._start)
        self._file = self._open()
        self.frames_read = 0


def read_audio(src: AudioSource, *, name: str | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Read a whole audio file as float32 ``[frames, channels]``.

    Reads in blocks to the end of the data (not trusting the header's frame count).
    AudioError, naming the file, when libsndfile cannot read it (with its one-line
    reason) or when a sample is NaN or infinite (with the first one's frame and time).
    """
    with AudioReader(src, name=name) as reader:
        blocks = list(reader.blocks())
        info = reader.info
    data = (np.concatenate(blocks) if blocks
            else np.zeros((0, info.channels), dtype=np.float32))
    return data, dataclasses.replace(info, frames=data.shape[0])


def _check_finite(block: np.ndarray, start: int, rate: int, label: str) -> None:
    finite = np.isfinite(block)
    if finite.all():
        return
    frame, channel = np.argwhere(~finite)[0]
    value = block[frame, channel]
    kind = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
    where = start + int(frame)
    raise AudioError(
        f"sample is {kind} at frame {where} ({where / rate:.6f} s), channel {int(channel)}; "
        f"audio must be finite",
        path=label,
    )


def resampled_length(n: int, orig: int, new: int) -> int:
    """Frames after resampling n frames from orig to new Hz: ceil(n * new / orig)."""
    if orig == new:
        return n
    g = math.gcd(orig, new)
    return -(-n * (new // g) // (orig // g))


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample ``x`` [..., time] with the pinned method; ceil(L*new/orig) samples out."""

    if orig == new:
        return x
    want = resampled_length(x.shape[-1], orig, new)
    if x.shape[-1] == 0:
        return x.new_zeros(*x.shape[:-1], 0)
    import torchaudio.functional as F

    y = F.resample(x, orig, new, **RESAMPLE_KW)
    if y.shape[-1] != want:  # torchaudio's float ceil could differ on huge inputs
        y = fit_length(y, want)
    return y


def fit_length(x: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to exactly n."""
    import torch

    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def output_format(dst: object, format: str | None) -> str:
    """WAV, FLAC or RAW (headerless little-endian samples): explicit ``format``, else the
    path's extension, else WAV."""
    if format is not None:
        fmt = format.upper()
        if fmt not in FORMATS.values():
            raise AudioError(f"unsupported output format {format!r}; use WAV, FLAC or RAW")
        return fmt
    if isinstance(dst, (str, os.PathLike)):
        ext = Path(os.fsdecode(dst)).suffix.lower()
        if ext in FORMATS:
            return FORMATS[ext]
        if ext:
            raise AudioError(
                f"cannot tell the output format from extension {ext!r}; use .wav, .flac or .raw",
                path=os.fsdecode(dst),
            )
    return "WAV"


@dataclass(frozen=True)
class WriteResult:
    frames: int
    channels: int
    sample_rate: int
    format: str
    subtype: str
    clipped_samples: int
    bytes: int


def check_output(dst: object, subtype: str, format: str | None) -> tuple[str, str]:
    """(format, subtype) for an output, or AudioError for a combination we cannot write."""
    label = source_label(dst)
    subtype = subtype.upper()
    if subtype not in SUBTYPES:
        raise AudioError(f"unsupported subtype {subtype!r}; use one of {', '.join(SUBTYPES)}",
                         path=label)
    fmt = output_format(dst, format)
    if fmt == "FLAC" and subtype == "FLOAT":
        raise AudioError("FLAC cannot store FLOAT samples; use PCM_16 or PCM_24", path=label)
    return fmt, subtype


def write_audio(dst: AudioSource, data: np.ndarray, sample_rate: int, *,
                subtype: str = "PCM_16", format: str | None = None) -> WriteResult:
    """Write float ``[frames, channels]`` as WAV or FLAC; paths are written atomically.

    PCM subtypes clip to [-1, 1]; the number of clipped samples is returned, not
    printed. FLOAT keeps values as they are. To a pipe, the file is built in memory
    (the data is there already) so that it is byte for byte what a file would hold.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"audio must be [frames, channels], got shape {data.shape}")
    return write_audio_blocks(dst, [data], sample_rate, data.shape[1], subtype=subtype,
                              format=format, spool="memory")


class _Clipper:
    """Counts and clips PCM samples outside [-1, 1], block by block."""

    def __init__(self, subtype: str) -> None:
        self.pcm = subtype != "FLOAT"
        self.clipped = 0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if self.pcm:
            over = np.count_nonzero(np.abs(block) > 1.0)
            if over:
                self.clipped += int(over)
                block = np.clip(block, -1.0, 1.0)
        return block


def write_audio_blocks(dst: AudioSource, blocks: Iterable[np.ndarray], sample_rate: int,
                       channels: int, *, frames: int | None = None, subtype: str = "PCM_16",
                       format: str | None = None, spool: str = "file",
                       overwrite: bool = True, live: bool = False) -> WriteResult:
    """Write float32 ``[n, channels]`` blocks as WAV or FLAC, holding one block at a time.

    A path is written to a temporary file and renamed when complete (an existing one is
    an OutputError unless ``overwrite``: see _io.atomic_write); a seekable file
    object at offset 0 gets libsndfile's output directly. To a pipe, a WAV whose length
    is known in advance (``frames``) streams with a header written here
    (:func:`wav_header`); otherwise the file is made in a temporary file (``spool=
    "file"``) or in memory (``"memory"``) and then copied out, because libsndfile seeks
    back to patch its headers. ``frames``, when given, must be the blocks' total.

    RAW is the samples alone, little-endian, streamed to any destination. ``live``: each
    block is flushed as soon as it is written, and a WAV to a pipe whose length is not
    known streams with a header that says so (:func:`wav_header` of ``frames`` None).
    """
    import soundfile as sf

    label = source_label(dst)
    fmt, subtype = check_output(dst, subtype, format)
    clip = _Clipper(subtype)
    count = 0

    sf_errors = (sf.LibsndfileError, RuntimeError, ValueError, TypeError)

    def encode_into(f: BinaryIO) -> None:
        # only libsndfile's own failures become AudioErrors: the blocks may come from a
        # generator whose errors (a corrupt container, say) must pass through unchanged
        nonlocal count
        out = _CallbackFile(f, label)

        def call(op, *args, **kwargs):  # op: a soundfile call
            try:
                result = op(*args, **kwargs)
            except Exception as exc:
                out.raise_failure()  # a failed write is why it failed (soundfile may assert)
                if isinstance(exc, sf_errors):
                    raise AudioError(f"cannot write audio: {_sf_reason(exc)}", path=label) from None
                raise
            out.raise_failure()
            return result

        snd = call(sf.SoundFile, out, "w", samplerate=int(sample_rate), channels=channels,
                   subtype=subtype, format=fmt)
        try:
            for block in blocks:
                _check_block(block, channels)
                block = clip(block)
                call(snd.write, block)
                count += block.shape[0]
        except BaseException:
            with contextlib.suppress(*sf_errors):
                snd.close()
            raise
        call(snd.close)

    def stream_into(out: BinaryIO, header: bytes) -> int:
        nonlocal count
        _write_all(out, header)
        n_bytes = len(header)
        flush = getattr(out, "flush", None) if live else None
        for block in blocks:
            _check_block(block, channels)
            data = _wav_samples(clip(block), subtype, int(sample_rate))
            _write_all(out, data)
            if flush is not None:
                flush()
            n_bytes += len(data)
            count += block.shape[0]
        if fmt == "WAV" and frames is not None and count != frames:
            raise ValueError(f"the WAV header promised {frames} frames, got {count}")
        return n_bytes

    if fmt == "RAW" and isinstance(dst, (str, os.PathLike)):
        with atomic_write(dst, overwrite=overwrite) as out:
            n_bytes = stream_into(out, b"")
    elif fmt == "RAW":
        n_bytes = stream_into(dst, b"")
    elif isinstance(dst, (str, os.PathLike)):
        with atomic_write(dst, overwrite=overwrite) as out:  # libsndfile seeks back: a real file
            encode_into(out)
            n_bytes = out.seek(0, io.SEEK_END)
    elif _seekable(dst) and dst.tell() == 0:  # libsndfile seeks to absolute offsets
        encode_into(dst)
        n_bytes = dst.seek(0, io.SEEK_END)
    elif fmt == "WAV" and frames is not None and wav_data_size(frames, channels, subtype) \
            <= _WAV_MAX_DATA:
        n_bytes = stream_into(dst, wav_header(int(sample_rate), channels, subtype, frames))
    elif fmt == "WAV" and live:  # the length comes last: a header that says it is unknown
        n_bytes = stream_into(dst, wav_header(int(sample_rate), channels, subtype, None))
    else:  # a pipe: build the file aside, then copy it out
        import tempfile

        with (tempfile.TemporaryFile() if spool == "file" else io.BytesIO()) as buf:
            encode_into(buf)
            n_bytes = buf.seek(0, io.SEEK_END)
            buf.seek(0)
            for piece in iter(lambda: buf.read(1 << 20), b""):
                _write_all(dst, piece)
    return WriteResult(count, channels, int(sample_rate), fmt, subtype, clip.clipped,
                       int(n_bytes))


class _CallbackFile:
    """The file libsndfile writes through, by soundfile's C callbacks. An exception raised
    in a callback is printed ("Exception ignored ...") and lost, libsndfile seeing only a
    bad return value; this keeps the first one, fails every later call, and
    :meth:`raise_failure` raises it once libsndfile has returned (an OSError as an
    OutputError naming the output)."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        self._f = f
        self._label = label
        self._failure: BaseException | None = None

    def _call(self, op, *args, failed: int):
        if self._failure is None:
            try:
                return op(*args)
            except BaseException as exc:  # noqa: BLE001 - raise_failure raises it again
                self._failure = exc
        return failed

    def write(self, data) -> int:
        return self._call(self._f.write, data, failed=0)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._call(self._f.seek, offset, whence, failed=-1)

    def tell(self) -> int:
        return self._call(self._f.tell, failed=-1)

    def raise_failure(self) -> None:
        if isinstance(self._failure, OSError):
            raise cannot_write(self._failure, self._label) from None
        if self._failure is not None:
            raise self._failure


def _check_block(block: np.ndarray, channels: int) -> None:
    if block.ndim != 2 or block.shape[1] != channels:
        raise ValueError(f"audio blocks must be [frames, {channels}], got shape {block.shape}")


def _write_all(dst: BinaryIO, data) -> None:
    view = memoryview(data)
    while view:
        n = dst.write(view)
        view = view[n if n is not None else len(view):]


#: bytes per sample of each subtype in a WAV file
_WAV_WIDTH = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
#: the RIFF size field is 32 bits
_WAV_MAX_DATA = 0xFFFFFFFF - 64


def wav_data_size(frames: int, channels: int, subtype: str) -> int:
    return frames * channels * _WAV_WIDTH[subtype]


def wav_header(sample_rate: int, channels: int, subtype: str, frames: int | None) -> bytes:
    """A RIFF/WAVE header for ``frames`` frames, as libsndfile writes it for PCM; for a
    stream of unknown length (``frames`` None) the sizes are 0xFFFFFFFF, as ffmpeg and sox
    write to a pipe.

    PCM_16/PCM_24: the 44-byte canonical header (format tag 1, plain ``fmt `` chunk also
    for more than two channels, as libsndfile does), so a streamed file is byte for byte
    the file libsndfile makes. FLOAT: format tag 3 and a ``fact`` chunk; libsndfile also
    adds an optional ``PEAK`` chunk (peaks and a timestamp), which a stream cannot know
    in advance and which readers skip.
    """
    width = _WAV_WIDTH[subtype]
    tag = 3 if subtype == "FLOAT" else 1
    block_align = channels * width
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * block_align,
                      block_align, 8 * width)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    unknown = 0xFFFFFFFF
    if tag == 3:
        chunks += b"fact" + struct.pack("<II", 4, unknown if frames is None else frames)
    if frames is None:
        data_size = riff_size = unknown
    else:
        data_size = wav_data_size(frames, channels, subtype)
        riff_size = 4 + len(chunks) + 8 + data_size
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + chunks + b"data"
            + struct.pack("<I", data_size))


def _wav_samples(block: np.ndarray, subtype: str, sample_rate: int) -> bytes:
    """The sample bytes of a WAV data chunk, converted by libsndfile itself for PCM."""
    if subtype == "FLOAT":
        return np.ascontiguousarray(block, dtype="<f4").tobytes()
    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=sample_rate, channels=block.shape[1],
                      subtype=subtype, format="RAW", endian="LITTLE") as raw:
        raw.write(block)
    return buf.getvalue()
