"""Reconstruction metrics on numpy arrays (no torch). Formulas: docs/METRICS.md.

Arrays are ``[frames, channels]`` float, already aligned (same rate, channels, length).
Values that are infinite (identical signals) are returned as ``math.inf``. STOI and
PESQ come from the optional packages ``pystoi`` and ``pesq`` (``pip install
'tokpack[metrics]'``); without them, or where they cannot score the input, they are None.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from functools import lru_cache

import numpy as np

MEL_BANDS = 80
#: floor on normalised mel power before the log: -80 dB (a full-scale sine peaks near
#: -6 dB), so digital silence stays finite and inaudible differences weigh little
MEL_EPS = 1e-8
#: log-mel frames computed at once: bounds the float64 temporaries on long inputs
MEL_BLOCK_FRAMES = 1024
#: P.862.2 wide-band PESQ is defined at this rate only
PESQ_RATE = 16_000
_TINY = np.finfo(np.float64).tiny


def has_stoi() -> bool:
    return importlib.util.find_spec("pystoi") is not None


def has_pesq() -> bool:
    return importlib.util.find_spec("pesq") is not None


def _2d(x: np.ndarray, dtype=None) -> np.ndarray:
    x = np.asarray(x, dtype)
    return x[:, None] if x.ndim == 1 else x


def _ratio_db(signal_energy: float, noise_energy: float) -> float:
    if noise_energy <= 0.0:
        return math.inf
    if signal_energy <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


def snr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """Signal-to-noise ratio over all samples and channels: 10 log10(Σ ref² / Σ (ref − deg)²)."""
    ref = np.asarray(ref, np.float64)
    deg = np.asarray(deg, np.float64)
    return _ratio_db(float(np.sum(ref * ref)), float(np.sum((ref - deg) ** 2)))


def si_sdr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """Scale-invariant SDR (Le Roux et al., 2019), per channel on zero-mean signals, averaged."""
    ref, deg = _2d(ref, np.float64), _2d(deg, np.float64)
    if ref.size == 0:  # nothing to differ
        return math.inf
    values = []
    for c in range(ref.shape[1]):
        r = ref[:, c] - ref[:, c].mean()
        d = deg[:, c] - deg[:, c].mean()
        energy = float(r @ r)
        if energy <= 0.0:
            values.append(math.inf if float(d @ d) == 0.0 else -math.inf)
            continue
        target = (float(d @ r) / energy) * r
        noise = d - target
        values.append(_ratio_db(float(target @ target), float(noise @ noise)))
    if math.inf in values and -math.inf in values:  # undefined mean; the worse channel wins
        return -math.inf
    return float(np.mean(values))


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = MEL_BANDS) -> np.ndarray:
    """Triangular HTK-mel filters, ``[n_mels, n_fft // 2 + 1]``, from 0 Hz to Nyquist."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / np.maximum(centre - lower, _TINY)
    falling = (upper - freqs) / np.maximum(upper - centre, _TINY)
    return np.maximum(0.0, np.minimum(rising, falling))


def fft_size(sample_rate: int) -> int:
    """~43 ms windows at any rate: the power of two nearest sample_rate / 23.4375 (1024 at 24 kHz)."""
    return 1 << max(6, round(math.log2(sample_rate / 23.4375)))


def log_mel(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """log10 mel power spectrogram of a mono signal, ``[frames, MEL_BANDS]``.

    Hann window of :func:`fft_size` samples, hop a quarter of it, no padding except a
    signal shorter than one window (zero-padded to one frame). Power is normalised by
    (Σ window)², so an amplitude-A sine at a bin centre has power A²/4 whatever the rate.
    """
    n_fft = fft_size(sample_rate)
    hop = n_fft // 4
    x = np.asarray(x, np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    window = np.hanning(n_fft)
    filters = mel_filterbank(sample_rate, n_fft).T / window.sum() ** 2
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n_frames]
    out = np.empty((n_frames, MEL_BANDS))
    for start in range(0, n_frames, MEL_BLOCK_FRAMES):
        block = frames[start:start + MEL_BLOCK_FRAMES] * window
        power = np.abs(np.fft.rfft(block, axis=1)) ** 2
        out[start:start + len(block)] = np.log10(np.maximum(power @ filters, MEL_EPS))
    return out


def mel_distance(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of log10 mel power (per channel, averaged); 0 for identical input."""
    ref, deg = _2d(ref), _2d(deg)
    if len(ref) == 0:
        return 0.0
    return float(
        np.mean([np.mean(np.abs(log_mel(ref[:, c], sample_rate) - log_mel(deg[:, c], sample_rate))) for c in range(ref.shape[1])])
    )


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float | None:
    """STOI (Taal et al., 2011) of mono signals via pystoi; None without pystoi or when it
    cannot score them (under 30 frames of non-silent reference, about 0.4 s)."""
    if not has_stoi():
        return None
    from pystoi import stoi as _stoi

    ref = np.asarray(ref, np.float64).ravel()
    deg = np.asarray(deg, np.float64).ravel()
    if len(ref) == 0 or not ref.any():
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = _stoi(ref, deg, sample_rate, extended=False)
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None
    return float(value)


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float | None:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO) of mono signals at 16 kHz via the ``pesq``
    package; None without it or when it cannot score them (silence, too short)."""
    if not has_pesq():
        return None
    from pesq import PesqError, pesq

    ref = np.asarray(ref, np.float64).ravel()
    deg = np.asarray(deg, np.float64).ravel()
    if not ref.any() or not deg.any():  # pesq divides by the peak; it finds no utterance anyway
        return None
    try:
        return float(pesq(PESQ_RATE, ref, deg, "wb"))
    except PesqError:  # no utterances, buffer too short
        return None
