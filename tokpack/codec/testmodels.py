"""Deterministic test models: the real EnCodec architecture with made-up weights.

For offline CI and pipeline tests only. The official checkpoints cannot be downloaded
everywhere, so ``test_24khz`` and ``test_48khz`` give the same network shapes, token
layout and framing with weights built locally in a few seconds: seeded random
network weights, and residual-VQ codebooks fitted by a few k-means iterations to the
encoder's output on ~40 s of synthetic sound (random chirps and noise bursts at
random gains). The codebooks make the token streams varied, like real ones, so the
container and entropy coders see realistic data. The audio these models decode is
not speech and not music; never present its quality as EnCodec's.

The build pins torch to one thread, so the weights (and the container's
weights_sha256) do not depend on the machine's core count. They can still differ
between CPU types (vectorised float sums), which only matters if test-model
containers are moved between machines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tokpack.codec.registry import ModelSpec
from tokpack.codec.threads import torch_threads

if TYPE_CHECKING:
    import torch

#: Bump when anything below changes the weights; it names the cache folder.
RECIPE_VERSION = 1
SEED = 20240601
#: training vectors: 3000 encoder frames either way (40 s at 75 Hz, 20 s at 150 Hz)
TRAIN_FRAMES = 3000
PIECE_SECONDS = 1.0
#: encoder batch: small batches are ~2.5x faster than one big one on CPU (cache)
PIECES_PER_BATCH = 4
#: k-means iterations for the first levels, then for the rest
KMEANS_ITERS = (4, 2)
KMEANS_FULL_LEVELS = 8
#: noise added to the k-means training points, relative to the residual's std
JITTER = 0.3


def synthetic_training_audio(sample_rate: int, channels: int, seconds: float,
                             seed: int = SEED) -> np.ndarray:
    """Varied synthetic sound, float32 [channels, samples], peak below 1.

    Overlapping events: log chirps (with a few harmonics), white or band-shaped noise
    bursts, and click trains, each at a random gain (-45 to -3 dBFS) and, for stereo,
    a random pan. A repetitive signal collapses the k-means codebooks; this
    mix spreads the encoder outputs.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros((channels, n), dtype=np.float64)
    t_pos = 0
    while t_pos < n:
        length = int(rng.uniform(0.05, 0.8) * sample_rate)
        start = t_pos
        t_pos += int(rng.uniform(0.02, 0.35) * sample_rate)
        length = min(length, n - start)
        if length <= 0:
            break
        t = np.arange(length) / sample_rate
        kind = rng.choice(3, p=[0.5, 0.4, 0.1])
        if kind == 0:  # log chirp with harmonics
            f0, f1 = np.exp(rng.uniform(np.log(60), np.log(sample_rate * 0.4), size=2))
            dur = max(t[-1], 1e-3)
            k = np.log(f1 / f0) / dur
            phase = 2 * np.pi * f0 * (np.expm1(k * t) / k if abs(k) > 1e-9 else t)
            sig = np.zeros(length)
            for h in range(1, int(rng.integers(1, 5)) + 1):
                sig += rng.uniform(0.2, 1.0) / h * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
        elif kind == 1:  # noise burst, white or band-shaped in the frequency domain
            sig = rng.standard_normal(length)
            if rng.random() < 0.7:
                spec = np.fft.rfft(sig)
                freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
                centre = np.exp(rng.uniform(np.log(80), np.log(sample_rate * 0.45)))
                width = rng.uniform(0.2, 2.0)  # octaves
                shape = np.exp(-0.5 * (np.log2((freqs + 1.0) / centre) / width) ** 2)
                sig = np.fft.irfft(spec * shape, n=length)
        else:  # click train
            sig = np.zeros(length)
            period = int(rng.uniform(0.002, 0.02) * sample_rate)
            sig[:: max(period, 1)] = rng.choice([-1.0, 1.0])
        env_len = min(length, int(0.01 * sample_rate)) or 1
        env = np.ones(length)
        ramp = np.linspace(0.0, 1.0, env_len)
        env[:env_len] *= ramp
        env[length - env_len:] *= ramp[::-1]
        sig = sig * env
        peak = np.max(np.abs(sig)) or 1.0
        gain = 10 ** (rng.uniform(-45, -3) / 20) / peak
        if channels == 1:
            out[0, start:start + length] += gain * sig
        else:
            pan = rng.uniform(0, 1)
            pans = np.array([np.sqrt(1 - pan), np.sqrt(pan)] + [0.7] * (channels - 2))
            out[:, start:start + length] += gain * pans[:, None] * sig[None, :]
    peak = np.max(np.abs(out))
    if peak > 0.98:
        out *= 0.98 / peak
    return out.astype(np.float32)


def _kmeans(samples: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple:
    import torch

    n = samples.shape[0]
    if n >= k:
        means = samples[torch.randperm(n, generator=gen)[:k]].clone()
    else:
        means = samples[torch.randint(0, n, (k,), generator=gen)].clone()
    counts = torch.zeros(k)
    for _ in range(iters):
        assign = _nearest(samples, means)
        counts = torch.bincount(assign, minlength=k).to(samples.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, samples)
        nonzero = counts > 0
        means = torch.where(nonzero[:, None], sums / counts.clamp(min=1)[:, None], means)
    return means, counts


def _nearest(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row for each row of x (squared Euclidean)."""
    import torch

    # |x|^2 is the same for every candidate, so argmin(|e|^2 - 2 x.e) picks the same row
    # as encodec's EuclideanCodebook.quantize up to float rounding; this is training only.
    dist = torch.addmm(embed.pow(2).sum(1)[None, :], x, embed.t(), alpha=-2.0)
    return dist.argmin(dim=-1)


def build_test_state_dict(spec: ModelSpec) -> dict:
    """Build the weights of test model ``spec`` (a few seconds; one torch thread)."""
    import torch

    from tokpack.codec.architecture import build_architecture

    with torch_threads(1), torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_architecture(spec)
        seconds = TRAIN_FRAMES / spec.frame_rate
        audio = synthetic_training_audio(spec.sample_rate, spec.channels, seconds)
        piece = int(PIECE_SECONDS * spec.sample_rate)
        n_pieces = audio.shape[1] // piece
        x = torch.from_numpy(audio[:, : n_pieces * piece].copy())
        x = x.reshape(spec.channels, n_pieces, piece).transpose(0, 1).contiguous()
        if model.normalize:  # as EncodecModel._encode_frame does per segment
            volume = x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
            x = x / (1e-8 + volume)
        embs = [model.encoder(x[i:i + PIECES_PER_BATCH])  # [B, D, T]
                for i in range(0, n_pieces, PIECES_PER_BATCH)]
        emb = torch.cat(embs)
        residual = emb.transpose(1, 2).reshape(-1, emb.shape[1]).contiguous()
        gen = torch.Generator().manual_seed(SEED)
        for level, layer in enumerate(model.quantizer.vq.layers):
            book = layer._codebook
            iters = KMEANS_ITERS[0] if level < KMEANS_FULL_LEVELS else KMEANS_ITERS[1]
            # 3000 points for 1024 clusters: many clusters hold one point, whose residual
            # would be exactly 0 and starve the later levels. Fitting to jittered copies
            # keeps every level's residual alive, as in a trained RVQ.
            jitter = JITTER * residual.std(dim=0, keepdim=True)
            noisy = residual + jitter * torch.randn(residual.shape, generator=gen)
            means, counts = _kmeans(noisy, spec.codebook_size, iters, gen)
            book.embed.copy_(means)
            book.embed_avg.copy_(means)
            book.cluster_size.copy_(counts)
            book.inited.fill_(1.0)
            residual = residual - means[_nearest(residual, means)]
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
