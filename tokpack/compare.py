"""Reconstruction error between a reference and a degraded signal (what `tokpack compare`
and `tokpack bench` report). Prints nothing; formulas in docs/METRICS.md.

Alignment (:func:`align`): the degraded signal is resampled to the reference's rate with
the pinned resampler; if the channel counts differ both are downmixed to mono (mean of
the channels); then only the common prefix (the shorter length) is compared. Torch is
imported only to resample (rates that differ, and PESQ at 16 kHz).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import BinaryIO

import numpy as np

from tokpack import metrics

SCHEMA_VERSION = 1

Src = str | os.PathLike | BinaryIO


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinities: ±inf (and NaN) become null; docs/CLI.md says what null means."""
    if value is None or not math.isfinite(value):
        return None
    return value


def format_db(value: float | None) -> str:
    """``20.00 dB``, ``inf dB``, ``-inf dB``, or ``n/a``."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf dB" if value > 0 else "-inf dB"
    return f"{value:.2f} dB"


@dataclass(frozen=True)
class Metrics:
    """Scores of an aligned pair. snr_db/si_sdr_db may be ±inf; stoi/pesq_wb None when
    the optional package is missing or cannot score the signal."""

    snr_db: float
    si_sdr_db: float
    mel_distance: float
    stoi: float | None
    pesq_wb: float | None

    def to_json(self) -> dict:
        out = asdict(self)
        out["snr_db"] = finite_or_none(self.snr_db)
        out["si_sdr_db"] = finite_or_none(self.si_sdr_db)
        return out


@dataclass(frozen=True)
class CompareResult:
    schema_version: int
    ref_path: str
    deg_path: str
    sample_rate: int  # Hz the signals were compared at (the reference's)
    channels: int  # channels compared (1 when the counts differed)
    ref_sample_rate: int
    ref_channels: int
    ref_frames: int
    deg_sample_rate: int
    deg_channels: int
    deg_frames: int
    compared_frames: int  # the common prefix, at sample_rate
    duration_s: float  # compared_frames / sample_rate
    metrics: Metrics

    def to_json(self) -> dict:
        out = asdict(self)
        del out["metrics"]
        out.update(self.metrics.to_json())
        return out


def downmix(x: np.ndarray) -> np.ndarray:
    """Mean of the channels, ``[frames, 1]``."""
    return x.mean(axis=1, keepdims=True, dtype=np.float64).astype(x.dtype)


def resample_array(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """``[frames, channels]`` resampled with the pinned method (ceil(frames·new/orig) out)."""
    if orig == new:
        return x
    import torch

    from tokpack.codec.audio import resample

    y = resample(torch.from_numpy(np.ascontiguousarray(x.T, dtype=np.float32)), orig, new)
    return np.ascontiguousarray(y.numpy().T)


def align(ref: np.ndarray, ref_rate: int, deg: np.ndarray, deg_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The compare alignment rules (module docstring): equal rate, channels and length."""
    if ref.shape[1] != deg.shape[1]:
        ref, deg = downmix(ref), downmix(deg)
    deg = resample_array(deg, deg_rate, ref_rate)
    n = min(len(ref), len(deg))
    return ref[:n], deg[:n]


def measure(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> Metrics:
    """All metrics of an aligned pair ``[frames, channels]`` at ``sample_rate``.

    STOI and PESQ score the mono downmix; PESQ after resampling it to 16 kHz.
    """
    if ref.shape != deg.shape:
        raise ValueError(f"signals are not aligned: {ref.shape} vs {deg.shape}")
    stoi = pesq = None
    if len(ref) and (metrics.has_stoi() or metrics.has_pesq()):
        ref_mono, deg_mono = downmix(ref)[:, 0], downmix(deg)[:, 0]
        stoi = metrics.stoi(ref_mono, deg_mono, sample_rate)
        if metrics.has_pesq():
            pesq = metrics.pesq_wb(resample_array(ref_mono[:, None], sample_rate, metrics.PESQ_RATE)[:, 0],
                                   resample_array(deg_mono[:, None], sample_rate, metrics.PESQ_RATE)[:, 0])
    return Metrics(
        snr_db=metrics.snr_db(ref, deg),
        si_sdr_db=metrics.si_sdr_db(ref, deg),
        mel_distance=metrics.mel_distance(ref, deg, sample_rate),
        stoi=stoi,
        pesq_wb=pesq,
    )


def compare_files(ref: Src, deg: Src, *, ref_name: str | None = None,
                  deg_name: str | None = None) -> CompareResult:
    """Read two audio files (paths or binary file objects), align them and score them.

    AudioError, naming the file, when one cannot be read.
    """
    from tokpack.codec.audio import read_audio, source_label

    ref_label, deg_label = source_label(ref, ref_name), source_label(deg, deg_name)
    ref_audio, ref_info = read_audio(ref, name=ref_label)
    deg_audio, deg_info = read_audio(deg, name=deg_label)
    a, b = align(ref_audio, ref_info.sample_rate, deg_audio, deg_info.sample_rate)
    return CompareResult(
        schema_version=SCHEMA_VERSION,
        ref_path=ref_label,
        deg_path=deg_label,
        sample_rate=ref_info.sample_rate,
        channels=a.shape[1],
        ref_sample_rate=ref_info.sample_rate,
        ref_channels=ref_info.channels,
        ref_frames=ref_info.frames,
        deg_sample_rate=deg_info.sample_rate,
        deg_channels=deg_info.channels,
        deg_frames=deg_info.frames,
        compared_frames=len(a),
        duration_s=len(a) / ref_info.sample_rate,
        metrics=measure(a, b, ref_info.sample_rate),
    )
