"""Audio file I/O (soundfile only) and the one pinned resampler.

Every entry point takes a path or a binary file object. libsndfile needs to seek, so a
file object that cannot (a pipe) is first read into memory; callers reading stdin pass
``io.BytesIO(sys.stdin.buffer.read())`` anyway.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from tokpack._io import atomic_write
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
FORMATS = {".wav": "WAV", ".flac": "FLAC"}


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


def _sf_reason(exc: Exception) -> str:
    reason = getattr(exc, "error_string", None) or str(exc)
    return " ".join(str(reason).split()).rstrip(".")


def read_audio(src: AudioSource, *, name: str | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Read a whole audio file as float32 ``[frames, channels]``.

    Reads in blocks to the end of the data (not trusting the header's frame count).
    AudioError, naming the file, when libsndfile cannot read it (with its one-line
    reason) or when a sample is NaN or infinite (with the first one's frame and time).
    """
    import soundfile as sf

    label = source_label(src, name)
    if not isinstance(src, (str, os.PathLike)) and not _seekable(src):
        src = io.BytesIO(src.read())
    if isinstance(src, (str, os.PathLike)):
        try:  # libsndfile says only "System error" for a missing or unreadable file
            with open(src, "rb"):
                pass
        except OSError as exc:
            raise AudioError(f"cannot open: {exc.strerror or exc}", path=label) from None
    size = _size_of(src)
    try:
        f = sf.SoundFile(src)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot read audio: {_sf_reason(exc)}", path=label) from None
    except OSError as exc:
        raise AudioError(f"cannot open: {exc.strerror or exc}", path=label) from None
    with f:
        info_base = (f.samplerate, f.channels, f.format, f.subtype)
        blocks = []
        done = 0
        try:
            while True:
                block = f.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                _check_finite(block, done, f.samplerate, label)
                blocks.append(block)
                done += block.shape[0]
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"cannot read audio: {_sf_reason(exc)}", path=label) from None
    rate, channels, fmt, subtype = info_base
    if rate <= 0 or channels <= 0:
        raise AudioError(f"invalid sample rate {rate} or channel count {channels}", path=label)
    data = np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.float32)
    return data, AudioInfo(rate, channels, data.shape[0], fmt, subtype, size)


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
    """WAV or FLAC: explicit ``format``, else the path's extension, else WAV."""
    if format is not None:
        fmt = format.upper()
        if fmt not in FORMATS.values():
            raise AudioError(f"unsupported output format {format!r}; use WAV or FLAC")
        return fmt
    if isinstance(dst, (str, os.PathLike)):
        ext = Path(os.fsdecode(dst)).suffix.lower()
        if ext in FORMATS:
            return FORMATS[ext]
        if ext:
            raise AudioError(
                f"cannot tell the output format from extension {ext!r}; use .wav or .flac",
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


def write_audio(dst: AudioSource, data: np.ndarray, sample_rate: int, *,
                subtype: str = "PCM_16", format: str | None = None) -> WriteResult:
    """Write float ``[frames, channels]`` as WAV or FLAC; paths are written atomically.

    PCM subtypes clip to [-1, 1]; the number of clipped samples is returned, not
    printed. FLOAT keeps values as they are.
    """
    import soundfile as sf

    label = source_label(dst)
    subtype = subtype.upper()
    if subtype not in SUBTYPES:
        raise AudioError(f"unsupported subtype {subtype!r}; use one of {', '.join(SUBTYPES)}",
                         path=label)
    fmt = output_format(dst, format)
    if fmt == "FLAC" and subtype == "FLOAT":
        raise AudioError("FLAC cannot store FLOAT samples; use PCM_16 or PCM_24", path=label)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"audio must be [frames, channels], got shape {data.shape}")
    clipped = 0
    if subtype != "FLOAT":
        over = np.abs(data) > 1.0
        clipped = int(np.count_nonzero(over))
        if clipped:
            data = np.clip(data, -1.0, 1.0)
    def encode_into(f: BinaryIO) -> None:
        try:
            with sf.SoundFile(f, "w", samplerate=int(sample_rate), channels=data.shape[1],
                              subtype=subtype, format=fmt) as snd:
                snd.write(data)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
            raise AudioError(f"cannot write audio: {_sf_reason(exc)}", path=label) from None

    if isinstance(dst, (str, os.PathLike)):
        with atomic_write(dst) as out:  # a real file: libsndfile seeks back to patch sizes
            encode_into(out)
            n_bytes = out.seek(0, io.SEEK_END)
    elif _seekable(dst) and dst.tell() == 0:  # libsndfile seeks to absolute offsets
        encode_into(dst)
        n_bytes = dst.seek(0, io.SEEK_END)
    else:  # a pipe: build the file in memory, then copy it out
        buf = io.BytesIO()
        encode_into(buf)
        payload = buf.getbuffer()
        n_bytes = len(payload)
        view = memoryview(payload)
        while view:
            n = dst.write(view)
            view = view[n if n is not None else len(view):]
    return WriteResult(data.shape[0], data.shape[1], int(sample_rate), fmt, subtype, clipped,
                       int(n_bytes))
