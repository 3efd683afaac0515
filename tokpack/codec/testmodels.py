"""Deterministic test models: the real EnCodec architecture with made-up weights.

For offline CI and pipeline tests only. The official checkpoints cannot be downloaded
everywhere, so ``test_24khz`` and ``test_48khz`` give the same network shapes, token
layout and framing with weights built locally in a few seconds: seeded random
network weights, and residual-VQ codebooks fitted by a few k-means iterations to the
encoder's output on ~40 s of synthetic sound (random chirps and noise bursts at
random gains). The codebooks make the token streams varied, like real ones, so the
container and entropy coders see realistic data. The audio these models decode is
not speech and not music; never present its quality as EnCodec's.

The same weights on every CPU. Containers record the weights' SHA-256, and the CTX
priors shipped for the test models are made for these weights, so a build must not
depend on which kernels the CPU gets. Recipe 1 fitted the codebooks to float32 encoder
outputs, which differ in the 7th digit between oneDNN's AVX2 and AVX-512 kernels;
k-means then assigned a few points differently and every codebook after the first
came out different (so a shipped prior was wrong on another CPU). Recipe 2:

* random draws come from torch's seeded CPU generator (the same on every CPU), and the
  weight-norm gains ``||v||`` are summed by numpy in float64, in a fixed order;
* the encoder runs in float64 (no oneDNN; BLAS kernels still differ by CPU, by about
  1e-16) and k-means works in float64, where a near-tie that flips an assignment would
  need two distances equal to 1e-15;
* each codebook, and the one bias set from data (below), is rounded to a grid of 2^-16
  of its largest value, which absorbs the 1e-16 differences unless a value lies within
  1e-16 of a grid midpoint (chance about 1e-11 per value, 1e-4 for a whole model).

Recipe 2 also centres the encoder's output (its last bias absorbs the training frames'
mean): a random encoder's outputs sit in a small cloud far from the origin, where the
quantizer's float32 distances cannot tell nearby codes apart, so that codes flipped
between thread counts in 11 % of a speech file's codes (1 % once centred).

Recipe 3 changes test_mimi only: transformers' init draws its float32 normals with
torch's vectorised Box-Muller, whose bits depend on the kernel set (an AMD AVX2 CPU built
other weights than the AVX-512 reference); it now draws them in float64, one at a time
(:func:`tokpack.codecs.mimi.model._seeded_model`).

Recipe 4 does the same for test_24khz and test_48khz: torch's float32 ``uniform_`` (the
convolutions' and LSTMs' default init) scales its draws in a kernel compiled per CPU
capability, and ATen's default kernels (a CPU without AVX2, or another architecture) drew
other weights than its AVX2 and AVX-512 ones; :func:`_draw_init` draws them again in
float64 and scales them with numpy. DAC's init (uniforms and truncated normals) built the
same weights under ATen's default kernels as under AVX2.

Recipe 5 puts the synthetic training audio on the grid of 16-bit PCM. numpy computes
its sin/exp/log with SIMD code chosen per CPU (AVX2, AVX-512 and Sapphire Rapids' each
its own): on an AMD AVX-512 CPU the float64 audio differed from the AVX2 code's in 46-97 %
of samples, by up to 3.4e-12, so 5 of 576,000 float32 samples of test_mimi's training
audio came out one ulp apart, enough for test_mimi to build other weights (the EnCodec and
DAC test models happened not to change). On the grid a difference of 3.4e-12 (1.1e-7 of a
step) can move a sample only if it lies that near a midpoint: summed over the samples,
about 3e-4 expected changes per model build.

Measured: the same weights under ``ONEDNN_MAX_CPU_ISA`` AVX2, AVX512_CORE and
AVX512_CORE_AMX, ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2`` and
1 or 2 threads (``scripts/check_determinism.py``); recipe 4's EnCodec models also under
``ATEN_CPU_CAPABILITY=default`` with ``ONEDNN_MAX_CPU_ISA=SSE41`` and
``MKL_ENABLE_INSTRUCTIONS=SSE4_2``, and ``MKL_CBWR=COMPATIBLE``; recipe 5's four models
also with numpy's AVX-512 dispatch disabled (``NPY_DISABLE_CPU_FEATURES``) and with the
no-AVX2 set above plus numpy's baseline code. :data:`REFERENCE_SHA256` records them.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from tokpack.codec.registry import ModelSpec
from tokpack.codec.threads import torch_threads

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tokpack models` reads RECIPE_VERSION)
    import torch

#: Bump when anything below changes the weights; it names the cache folder. Bumping it
#: means new REFERENCE_SHA256 digests and new shipped priors (scripts/make_priors.py).
RECIPE_VERSION = 5  # 5: the synthetic training audio on the 16-bit PCM grid
#: the synthetic training audio is rounded to multiples of 1/AUDIO_GRID_STEPS (16-bit PCM)
AUDIO_GRID_STEPS = 2.0 ** 15
#: codebook values are rounded to 2^-CODEBOOK_GRID_BITS of each codebook's largest one
CODEBOOK_GRID_BITS = 16
#: weights.weights_sha256 of what this recipe builds, the same on every kernel set and
#: thread count measured (module doc). Shipped priors are made for these weights, and a
#: test model's default prior is found by them even if a build ever differed.
REFERENCE_SHA256 = {
    "test_24khz": "c7631a00a595ce9b6eb3effb6c6e274a60858bbf7551844acd321567f10e20d4",
    "test_48khz": "89a75d91f56f03cdb5ffc9787f4d3f80e94771f31cff0696a8ebc7387091022d",
    # built by tokpack.codecs.mimi.model / dac.model with the same recipe's ideas
    "test_mimi": "33b833891bfff5851e57f9174c97c1386e2a1963b972cb6553632bb96e1a82ba",
    "test_dac_44khz": "7300fdf975c76835d8a054fbf03600f67f74c196fb4018174b32d0f69deda303",
}
SEED = 20240601
#: training vectors: 3000 encoder frames either way (40 s at 75 Hz, 20 s at 150 Hz)
TRAIN_FRAMES = 3000
PIECE_SECONDS = 1.0
#: encoder batch (float64: the batch size hardly matters)
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
    import numpy as np

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
    # on the grid of 16-bit PCM (exact in float32): absorbs the float64 ulps by which
    # numpy's SIMD sin/exp/log differ between CPUs (module doc, recipe 5)
    return (np.round(out * AUDIO_GRID_STEPS) / AUDIO_GRID_STEPS).astype(np.float32)


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
    with torch_threads(_fast_threads()):
        dist = torch.addmm(embed.pow(2).sum(1)[None, :], x, embed.t(), alpha=-2.0)
    return dist.argmin(dim=-1)


def _fast_threads() -> int:
    """Threads for the float64 encoder and distance products, the slow parts: their sums
    differ with the thread count by about 1e-16, which the codebook grid absorbs (the
    weights measured equal at 1 and 2 threads); the rest of the build runs on one."""
    return min(4, os.cpu_count() or 1)


def _draw_init(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Draw the convolutions' and LSTMs' parameters again from torch's default init
    distributions, uniform on [-b, b] (b = 1/sqrt(fan_in), 1/sqrt(hidden) for an LSTM), so
    that no CPU kernel takes part: torch's float32 ``uniform_`` computes ``from + (to - from)
    * u`` in a kernel compiled per CPU capability (with or without fused multiply-adds:
    ATen's default kernels drew other bits than its AVX2 ones), where u in [0, 1) drawn in
    float64 is the generator's bits exactly, and numpy scales it in float64."""
    import numpy as np
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            weight = getattr(module, "weight_v", None)
            fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(
                module.weight if weight is None else weight)
            bound = 1 / math.sqrt(fan_in)
        elif isinstance(module, torch.nn.LSTM):
            bound = 1 / math.sqrt(module.hidden_size)
        else:
            continue
        for name, param in module.named_parameters(recurse=False):
            if name != "weight_g":  # set from weight_v (_exact_gains)
                u = torch.rand(param.shape, generator=gen, dtype=torch.float64).numpy()
                param.copy_(torch.from_numpy((bound * (2.0 * u - 1.0)).astype(np.float32)))


def _exact_gains(model: torch.nn.Module) -> None:
    """Set every weight-norm gain ``g`` to ``||v||`` (the value weight_norm gave it at
    initialisation) as numpy computes it: float64 squares, exact for float32 inputs,
    summed in numpy's fixed pairwise order, so no CPU-specific reduction is involved."""
    import numpy as np
    import torch

    params = dict(model.named_parameters())
    for name, g in params.items():
        if name.endswith("_g") and name[:-2] + "_v" in params:
            v = params[name[:-2] + "_v"].detach().numpy().astype(np.float64)
            norm = np.sqrt(np.sum(v.reshape(v.shape[0], -1) ** 2, axis=1))
            g.copy_(torch.from_numpy(norm.astype(np.float32).reshape(g.shape)))


def _centre_output(model, mean: torch.Tensor) -> torch.Tensor:
    """Shift the encoder's output by about ``-mean`` (float64 [D]) through its last additive
    bias (the last conv's, or its group norm's at 48 kHz); returns the shift made.

    A randomly initialised encoder's outputs sit in a small cloud far from the origin (at
    24 kHz: norm 0.29, spread 0.01). The quantizer computes |x|^2 - 2 x.e + |e|^2 in
    float32, which then loses most of its bits to the offset: distances 0.3 % apart tie,
    and codes flip between thread counts (89 % equal on speech with silences). Centred,
    the codes behave as in a trained model."""
    import torch

    last = model.encoder.model[-1].conv
    bias = last.norm.bias if isinstance(last.norm, torch.nn.GroupNorm) else last.conv.bias
    old = bias.detach().double()
    bias.copy_(_on_grid(old - mean))
    return old - bias.detach().double()


def _on_grid(book: torch.Tensor) -> torch.Tensor:
    """float64 codebook -> float32 values on a grid of 2^-CODEBOOK_GRID_BITS of its
    largest magnitude (exact in float32; absorbs differences of a few float64 ulps)."""
    import torch

    top = float(book.abs().max())
    if top == 0.0:
        return book.float()
    step = 2.0 ** (math.floor(math.log2(top)) - CODEBOOK_GRID_BITS)
    return (torch.round(book / step) * step).float()


def build_test_state_dict(spec: ModelSpec) -> dict:
    """Build the weights of test model ``spec`` (~10 s on 2 cores; the same on every CPU
    and thread count: see the module doc)."""
    import numpy as np
    import torch

    from tokpack.codecs.encodec.architecture import build_architecture

    with torch_threads(1), torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_architecture(spec)
        _draw_init(model, torch.Generator().manual_seed(SEED))
        _exact_gains(model)
        seconds = TRAIN_FRAMES / spec.frame_rate
        audio = synthetic_training_audio(spec.sample_rate, spec.channels, seconds)
        piece = int(PIECE_SECONDS * spec.sample_rate)
        n_pieces = audio.shape[1] // piece
        x = torch.from_numpy(audio[:, : n_pieces * piece].astype(np.float64))
        x = x.reshape(spec.channels, n_pieces, piece).transpose(0, 1).contiguous()
        if model.normalize:  # as EncodecModel._encode_frame does per segment
            volume = x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
            x = x / (1e-8 + volume)
        encoder = model.encoder.double()  # float32 -> float64 -> float32 is exact
        with torch_threads(_fast_threads()):
            embs = [encoder(x[i:i + PIECES_PER_BATCH])  # [B, D, T]
                    for i in range(0, n_pieces, PIECES_PER_BATCH)]
        model.encoder.float()
        emb = torch.cat(embs)
        residual = emb.transpose(1, 2).reshape(-1, emb.shape[1]).contiguous()
        residual -= _centre_output(model, residual.mean(dim=0))
        gen = torch.Generator().manual_seed(SEED)
        for level, layer in enumerate(model.quantizer.vq.layers):
            book = layer._codebook
            iters = KMEANS_ITERS[0] if level < KMEANS_FULL_LEVELS else KMEANS_ITERS[1]
            # 3000 points for 1024 clusters: many clusters hold one point, whose residual
            # would be exactly 0 and starve the later levels. Fitting to jittered copies
            # keeps every level's residual alive, as in a trained RVQ.
            jitter = JITTER * residual.std(dim=0, keepdim=True)
            noise = torch.randn(residual.shape, generator=gen, dtype=torch.float64)
            means, counts = _kmeans(residual + jitter * noise, spec.codebook_size, iters, gen)
            embed = _on_grid(means)
            book.embed.copy_(embed)
            book.embed_avg.copy_(embed)
            book.cluster_size.copy_(counts)
            book.inited.fill_(1.0)
            residual = residual - means[_nearest(residual, means)]
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
