"""Mimi through transformers' classes: the official config, a test model, and streaming.

Streaming. Mimi is causal, so a stream computes what one pass over the whole signal
computes, piece by piece, with state that does not grow with the signal:

* :class:`StreamEncoder` runs ``MimiModel.encode(use_streaming=True)`` on pieces of
  :data:`PIECE_FRAMES` whole frames, carrying transformers' two caches: the padding
  cache (each causal convolution's last ``padding_total`` inputs) and the encoder
  transformer's KV cache. That cache is a ``DynamicCache(config=...)`` whose layers are
  sliding-window layers (the config's ``sliding_window``, 250 steps at 25 Hz = 10 s):
  each keeps its last 249 keys and values (what the next step can attend to), and
  counts the steps seen, from which the transformer takes the next absolute position
  (rotary embeddings as in one pass: cached keys are stored already rotated).
* :class:`StreamDecoder` dequantizes pieces, runs the upsampling transposed
  convolution, the decoder transformer (the same sliding KV cache) and the SEANet
  decoder layer by layer. transformers streams none of the decoder's convolutions, so
  this module does: a causal convolution (stride 1 throughout the decoder) keeps its
  last ``padding_total`` inputs, which stand in for the zeros one pass pads on the
  left; a transposed convolution (causal, trim_right_ratio 1: one pass drops its last
  ``kernel - stride`` outputs) computes a piece without bias, adds the previous
  piece's overlapping tail, emits the first ``stride * n`` samples (final: no later
  input reaches them) and keeps the rest as the next tail. ELUs act per sample and
  residual blocks add the two streamed branches, so the decoder streams exactly: each
  output sample is a sum of the same products as in one pass, in another order.

Exactness. The calls depend on the signal's position only (pieces of a fixed number of
frames; the last, shorter piece at the end), never on how it was fed, so codes and
audio do not depend on the feeding, at any thread count. Against one pass:

* The streamed SEANet encoder gave one pass's bits (2 s pieces); the transformer, run on
  other shapes (a piece's queries against the cached keys), rounds differently: the
  latents differ by up to 4e-6 (of values up to 21). A code can change only where two
  codes are that near a tie. Measured on 30 s of speech (speech_en_f_allison +
  speech_it_m_carlo, 375 frames) with the test model: all 32 codebooks equal, at 1 and
  at 2 threads (and 1 vs 2 threads equal too).
* The last frame differs by design when the signal is not whole frames. The stream
  zero-pads the *audio* to a whole frame; one pass pads each strided layer's *input*
  on the right (zeros for the convolutions, a copy of the last step for the
  25 -> 12.5 Hz downsampling), so its last frame sees other values and can get other
  codes (on those 30 s plus 1000 samples: the last frame differs from its first
  codebook on, every other frame equal). Every other frame's receptive field ends
  inside the signal (the network is causal), so padding cannot reach it.
* Decoded audio: max abs difference 3e-5 on a peak of 33 (the test model's output is
  loud), same 30 s, 1 or 2 threads; internal pieces of 1 frame (``piece_frames=1``)
  double it.

Test model. :func:`build_test_model` gives the official architecture with seeded
random weights and codebooks sampled from the encoder's output on synthetic sound
(:func:`tokpack.codec.testmodels.synthetic_training_audio`), the same on every CPU by
the recipe of :mod:`tokpack.codec.testmodels` (float64 encoder and codebook fit,
codebooks on a 2^-16 grid). Its audio is not speech; it exists for offline tests.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch
from transformers import DynamicCache, MimiConfig, MimiModel
from transformers.models.mimi.modeling_mimi import (
    MimiConv1d,
    MimiConvTranspose1d,
    MimiResnetBlock,
)

from tokpack.codec.testmodels import (
    _fast_threads,
    _nearest,
    _on_grid,
    synthetic_training_audio,
)
from tokpack.codec.threads import torch_threads
from tokpack.codecs.encodec import channels_last
from tokpack.errors import AudioError, ModelError, TokensError, UsageError

REPO_ID = "kyutai/mimi"

#: kyutai/mimi's config.json (transformers 4.45's layout: ``rope_theta`` is now inside
#: ``rope_parameters``). MimiConfig() has the same defaults today; stating them keeps the
#: official architecture fixed if transformers ever changes a default.
OFFICIAL_CONFIG = {
    "sampling_rate": 24_000,
    "frame_rate": 12.5,
    "audio_channels": 1,
    "hidden_size": 512,
    "num_filters": 64,
    "num_residual_layers": 1,
    "upsampling_ratios": [8, 6, 5, 4],
    "kernel_size": 7,
    "last_kernel_size": 3,
    "residual_kernel_size": 3,
    "dilation_growth_rate": 2,
    "use_causal_conv": True,
    "pad_mode": "constant",
    "compress": 2,
    "trim_right_ratio": 1.0,
    "codebook_size": 2048,
    "codebook_dim": 256,
    "num_quantizers": 32,
    "use_conv_shortcut": False,
    "vector_quantization_hidden_dimension": 256,
    "num_semantic_quantizers": 1,
    "upsample_groups": 512,
    "num_hidden_layers": 8,
    "intermediate_size": 2048,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "gelu",
    "max_position_embeddings": 8000,
    "initializer_range": 0.02,
    "norm_eps": 1e-5,
    "use_cache": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "sliding_window": 250,
    "attention_dropout": 0.0,
    "layer_scale_initial_scale": 0.01,
    "attention_bias": False,
}

#: frames per internal call of the streams (2 s), also their latency. Measured on 30 s,
#: one thread: 50 frames encode and decode ~13 % faster, 10 frames ~20 % slower, 5
#: frames ~70 % slower (each call runs ~50 layers); 1 frame is for live use.
PIECE_FRAMES = 25

TEST_SEED = 20240601
#: seconds of synthetic training audio for the test model's codebooks, encoded in pieces
#: of TRAIN_PIECE_SECONDS: ~600 latents (both downsampling phases)
TRAIN_SECONDS = 24.0
TRAIN_PIECE_SECONDS = 8.0
#: the test codebooks' jitter, relative to each level's residual std: for the first
#: codebook of each quantizer (semantic, acoustic), and for the others (_fit_codebooks)
JITTER_FIRST = 0.3
JITTER = 1.0
#: the test model's decoder output gain (its last convolution scaled by it)
OUTPUT_GAIN = 2.0**-6


def official_config() -> MimiConfig:
    """kyutai/mimi's configuration, built offline."""
    return MimiConfig(**OFFICIAL_CONFIG)


def build_model(config: MimiConfig) -> MimiModel:
    """``MimiModel(config)`` in eval mode, float32, with transformers' random init."""
    return MimiModel(config).float().eval()


def build_test_model() -> MimiModel:
    """The official architecture with seeded weights and fitted codebooks (~9 s on 2 idle
    cores); the caller's RNG state is left as it was.

    A fresh MimiModel's codebooks are all zero (every code 0), so each one is fitted,
    level by level like a residual quantizer, to the projected latents of the float64
    encoder on :data:`TRAIN_SECONDS` of synthetic sound. Unlike the EnCodec test models
    (testmodels._centre_output), nothing is centred: this random encoder's latents are
    not a tight cloud (on speech: mean norm ~90, spread ~45 per frame), and the float32
    quantizer chose the float64-nearest code for every code of 10 s of speech, all 32
    codebooks; the codes were the same at 1 and 2 threads."""
    with torch_threads(1), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEST_SEED)
        model = _seeded_model(official_config())
        _fit_codebooks(model, _training_latents(model))
        # the random decoder's output peaks near 33 on speech; a power of two (exact,
        # the same on every CPU) brings speech to about -26 dBFS rms, as DAC's test model
        last = model.decoder.decoder_seanet.layers[-1].conv
        last.weight.mul_(OUTPUT_GAIN)
        last.bias.mul_(OUTPUT_GAIN)
    return model


def _seeded_model(config: MimiConfig) -> MimiModel:
    """``build_model`` with transformers' random init drawn in float64, then rounded to
    float32. Its convolutions' ``kaiming_normal_`` and its linear layers' ``normal_`` on
    float32 tensors take torch's vectorised Box-Muller, whose bits depend on the CPU
    kernels torch picks (AVX-512, AVX2, none): recipe 2 built other weights on an AVX2
    CPU than on the AVX-512 one that recorded the reference. On float64 tensors torch
    draws normals one at a time, the same on every kernel set (measured: the same
    weights with ATEN_CPU_CAPABILITY=default and avx2)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = MimiModel(config)
    finally:
        torch.set_default_dtype(before)
    return model.float().eval()


def _training_latents(model: MimiModel) -> torch.Tensor:
    """float64 [N, hidden] encoder latents of the synthetic training audio.

    The encoder runs in float64 (float32 -> float64 -> float32 is exact, so the model is
    unchanged after), so the latents differ between CPUs by ~1e-16, not ~1e-7. Both
    phases of the stride-2 downsampling are taken: the odd one is what the encoder gives
    for the audio delayed by half a frame, twice the latents for one encoder pass."""
    sample_rate = model.config.sampling_rate
    piece = int(TRAIN_PIECE_SECONDS * sample_rate)
    audio = synthetic_training_audio(sample_rate, 1, TRAIN_SECONDS, seed=TEST_SEED)
    n_pieces = audio.shape[1] // piece
    x = torch.from_numpy(audio[0, : n_pieces * piece].astype(np.float64))
    x = x.reshape(n_pieces, 1, piece)
    encoder = model.encoder.double()
    latents = []
    try:
        with torch_threads(_fast_threads()):
            for i in range(n_pieces):
                hidden = encoder.encoder_seanet(x[i:i + 1])
                hidden = encoder.encoder_transformer(hidden.transpose(1, 2)).last_hidden_state
                hidden = hidden.transpose(1, 2)
                latents += [encoder.downsample(hidden), encoder.downsample(hidden[..., 1:-1])]
    finally:
        model.encoder.float()
    return torch.cat([lat[0].t() for lat in latents])


def _fit_codebooks(model: MimiModel, latents: torch.Tensor) -> None:
    """Set every codebook, in float64, from the projected latents: the semantic
    quantizer's one, then the acoustic quantizer's 31 on successive residuals; each
    rounded to the grid (:func:`tokpack.codec.testmodels._on_grid`).

    A codebook is a random sample of its level's residuals, each plus Gaussian jitter
    (a fraction of the residual's std per dimension): k-means with no Lloyd iteration.
    The iterations hurt here: in 256 dimensions a cluster mean lies nearer the cloud's
    centre than the points it averages, and such a mean is the nearest code of many
    points (hubness). While choosing this recipe, on 10 s of speech
    (speech_en_f_allison, 125 frames), the first codebook gave 69 distinct codes after
    4 iterations, 94 with none.

    The jitter sets how fast the residual shrinks, since a training latent's nearest
    code is often a jittered copy of itself. :data:`JITTER` 1.0 shrinks it by ~7 % a
    level (to 0.1 after 31 levels, like a trained RVQ). At 0.5 it halved every level,
    the last codes fell below the float32 quantizer's resolution (|r|^2 - 2 r.e + |e|^2
    with |e| ~ 1e-6 |r|), and speech got 1 to 10 distinct codes, chosen by rounding, in
    the last 5 codebooks. Each quantizer's first codebook gets :data:`JITTER_FIRST` 0.3,
    which keeps its codes more distinct (96 distinct codes against 62 at 1.0). The
    built model gives 93 to 123 distinct codes in every one of its 32 codebooks on that
    speech (carlo: 99 to 121).

    ``embed`` is ``embed_sum / cluster_usage``: with usage 1 the division is exact, so
    ``embed`` is the grid values bit for bit."""
    gen = torch.Generator().manual_seed(TEST_SEED)
    quantizer = model.quantizer
    size = quantizer.codebook_size
    for rvq in (quantizer.semantic_residual_vector_quantizer,
                quantizer.acoustic_residual_vector_quantizer):
        residual = latents @ rvq.input_proj.weight[:, :, 0].double().t()
        for level, layer in enumerate(rvq.layers):
            jitter = JITTER_FIRST if level == 0 else JITTER
            rows = torch.randint(0, residual.shape[0], (size,), generator=gen)
            noise = torch.randn(size, residual.shape[1], generator=gen, dtype=torch.float64)
            embed = _on_grid(residual[rows] + jitter * residual.std(dim=0) * noise)
            book = layer.codebook
            book.embed_sum.copy_(embed)
            book.cluster_usage.fill_(1.0)
            book._embed = None  # the property caches embed_sum / cluster_usage
            embed = embed.double()
            residual = residual - embed[_nearest(residual, embed)]


def reference_encode(model: MimiModel, x: torch.Tensor, n_q: int) -> np.ndarray:
    """One-pass codes, uint16 [n_q, frames], of ``x`` (float32 [1, n] at 24 kHz).

    What the streams are measured against. On 30 s of speech with the test model the
    streamed codes equal these except at near-ties and in the last frame (module doc)."""
    device = _device(model)
    with torch.inference_mode():
        codes = model.encode(x[None].to(device, torch.float32), num_quantizers=n_q).audio_codes
    return codes[0].cpu().numpy().astype(np.uint16)


def reference_decode(model: MimiModel, codes: np.ndarray) -> torch.Tensor:
    """One-pass ``model.decode`` of ``codes`` [n_q, T]: float32 [1, T * 1920] on the CPU."""
    device = _device(model)
    with torch.inference_mode():
        audio = model.decode(torch.from_numpy(np.asarray(codes, dtype=np.int64))[None].to(device))
    return audio.audio_values[0].cpu()


def _device(model: MimiModel) -> torch.device:
    return next(model.parameters()).device


class StreamEncoder:
    """24 kHz mono audio -> codes, in pieces of any size, with bounded memory.

    ``feed(x)`` buffers ``x`` (float32 [1, n], any n >= 0) and encodes every whole piece
    of ``piece_frames`` frames: it returns uint16 [n_q, k] for the frames of the pieces
    completed, k a multiple of ``piece_frames`` (pass 1 for the lowest latency).
    ``finish()`` encodes the rest, the last partial frame zero-padded to a whole one:
    over all calls ``ceil(samples / 1920)`` frames."""

    def __init__(self, model: MimiModel, n_q: int, piece_frames: int = PIECE_FRAMES) -> None:
        config = model.config
        if not 1 <= n_q <= config.num_quantizers:
            raise UsageError(f"Mimi has 1 to {config.num_quantizers} codebooks, not {n_q}")
        if piece_frames < 1:
            raise UsageError(f"piece_frames must be >= 1, got {piece_frames}")
        self._model = model
        self._n_q = n_q
        self._hop = config.frame_size
        self._device = _device(model)
        self._buffer = np.zeros(piece_frames * self._hop, dtype=np.float32)
        self._filled = 0
        self._encoder_cache = None
        self._padding_cache = None
        self._finished = False

    def feed(self, x: torch.Tensor) -> np.ndarray:
        if self._finished:
            raise UsageError("feed() after finish()")
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AudioError(f"Mimi takes mono audio [1, samples], got {shape}")
        if not x.is_floating_point():
            raise AudioError(f"audio must be floating point, got {x.dtype}")
        samples = x[0].detach().to("cpu", torch.float32).numpy()
        out = []
        size = self._buffer.size
        while samples.size:
            take = min(size - self._filled, samples.size)
            self._buffer[self._filled:self._filled + take] = samples[:take]
            self._filled += take
            samples = samples[take:]
            if self._filled == size:
                out.append(self._encode(self._buffer))
                self._filled = 0
        return self._join(out)

    def finish(self) -> np.ndarray:
        if self._finished:
            raise UsageError("finish() called twice")
        self._finished = True
        if self._filled == 0:
            return self._join([])
        end = math.ceil(self._filled / self._hop) * self._hop
        self._buffer[self._filled:end] = 0.0
        return self._encode(self._buffer[:end])

    def _encode(self, piece: np.ndarray) -> np.ndarray:
        # a copy: the padding cache keeps views of its inputs, the buffer is reused
        x = torch.tensor(piece, device=self._device)[None, None]
        with torch.inference_mode():
            out = self._model.encode(x, num_quantizers=self._n_q, encoder_cache=self._encoder_cache,
                                     padding_cache=self._padding_cache, use_streaming=True)
        self._encoder_cache = out.encoder_cache
        self._padding_cache = out.padding_cache
        # the padding cache holds views of each layer's whole input: copies of the 45 kB
        # it needs let the piece's activations (42 MB at 2 s pieces) go
        cached = self._padding_cache.padding_cache
        cached[:] = [t.clone() for t in cached]
        return out.audio_codes[0].cpu().numpy().astype(np.uint16)

    def _join(self, parts: list) -> np.ndarray:
        if not parts:
            return np.zeros((self._n_q, 0), dtype=np.uint16)
        return np.concatenate(parts, axis=1)

    @property
    def state_elements(self) -> int:
        """Tensor elements held between calls (KV cache, convolution contexts, buffer):
        the same after 60 s as after 120 s, the bounded-memory claim tests check."""
        held = self._buffer.size
        if self._encoder_cache is not None:
            held += _kv_elements(self._encoder_cache)
            held += sum(t.numel() for t in self._padding_cache.padding_cache)
        return held


class StreamDecoder:
    """Codes -> 24 kHz mono audio, in pieces of any size, with bounded memory.

    ``feed(codes)`` buffers ``codes`` ([n_q, T] ints, any T >= 0; n_q fixed by the first
    non-empty piece) and decodes every whole piece of ``piece_frames`` frames: it returns
    float32 [1, 1920 * k], the audio of those k frames, final. ``finish()`` decodes the
    rest: over all calls ``frames * 1920`` samples, equal to one-pass
    :func:`reference_decode` within float rounding."""

    def __init__(self, model: MimiModel, piece_frames: int = PIECE_FRAMES) -> None:
        if piece_frames < 1:
            raise UsageError(f"piece_frames must be >= 1, got {piece_frames}")
        _check_streamable_decoder(model)
        self._model = model
        self._piece_frames = piece_frames
        self._device = _device(model)
        self._codebooks = model.config.num_quantizers
        self._codebook_size = model.config.codebook_size
        self._pending: np.ndarray | None = None  # [n_q, < piece_frames] int64
        self._cache = DynamicCache(config=model.decoder.config)
        self._context: dict[torch.nn.Module, torch.Tensor] = {}  # conv: last inputs
        self._tails: dict[torch.nn.Module, torch.Tensor] = {}  # transposed conv: overlap
        self._finished = False

    def feed(self, codes: np.ndarray) -> torch.Tensor:
        if self._finished:
            raise UsageError("feed() after finish()")
        codes = self._check(codes)
        if codes.shape[1] == 0:
            return self._join([])
        pending = codes if self._pending is None else np.concatenate([self._pending, codes], axis=1)
        out = []
        p = self._piece_frames
        whole = pending.shape[1] // p * p
        for a in range(0, whole, p):
            out.append(self._decode(pending[:, a:a + p]))
        self._pending = pending[:, whole:].copy()
        return self._join(out)

    def finish(self) -> torch.Tensor:
        if self._finished:
            raise UsageError("finish() called twice")
        self._finished = True
        if self._pending is None or self._pending.shape[1] == 0:
            return self._join([])
        return self._decode(self._pending)

    @property
    def state_elements(self) -> int:
        """Tensor elements held between calls (KV cache, convolution contexts and tails,
        codes awaiting a whole piece): bounded, as for :class:`StreamEncoder`."""
        held = _kv_elements(self._cache)
        held += sum(t.numel() for t in (*self._context.values(), *self._tails.values()))
        return held + (0 if self._pending is None else self._pending.size)

    def _check(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype.kind not in "iu":
            raise TokensError(f"Mimi codes are ints [codebooks, frames], got {codes.dtype} "
                              f"of shape {codes.shape}")
        n_q = codes.shape[0]
        if self._pending is not None and n_q != self._pending.shape[0]:
            raise TokensError(f"{n_q} codebooks after {self._pending.shape[0]}")
        if not 1 <= n_q <= self._codebooks:
            raise TokensError(f"Mimi has 1 to {self._codebooks} codebooks, got {n_q}")
        if codes.size and (codes.min() < 0 or codes.max() >= self._codebook_size):
            raise TokensError(f"codes outside 0..{self._codebook_size - 1}: "
                              f"{codes.min()}..{codes.max()}")
        return codes.astype(np.int64)

    def _join(self, parts: list) -> torch.Tensor:
        if not parts:
            return torch.zeros(1, 0)
        return torch.cat(parts, dim=1)

    def _decode(self, codes: np.ndarray) -> torch.Tensor:
        decoder = self._model.decoder
        with torch.inference_mode():
            latents = self._model.quantizer.decode(torch.from_numpy(codes)[None].to(self._device))
            hidden = self._conv_transposed(decoder.upsample, latents)
            hidden = decoder.decoder_transformer(hidden.transpose(1, 2), cache=self._cache,
                                                 use_cache=True).last_hidden_state
            audio = self._layers(decoder.decoder_seanet.layers, hidden.transpose(1, 2))
        return audio[0].cpu()

    def _layers(self, layers, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            if isinstance(layer, MimiConv1d):
                x = self._conv(layer, x)
            elif isinstance(layer, MimiConvTranspose1d):
                x = self._conv_transposed(layer, x)
            elif isinstance(layer, MimiResnetBlock):
                shortcut = self._layers([layer.shortcut], x)
                x = shortcut + self._layers(layer.block, x)
            elif isinstance(layer, torch.nn.ELU):  # per sample; the compiled kernels'
                x = channels_last.elu(x, layer.alpha)
            else:  # Identity (a block without a shortcut convolution)
                x = layer(x)
        return x

    def _conv(self, layer: MimiConv1d, x: torch.Tensor) -> torch.Tensor:
        """Stride-1 causal convolution: the last ``padding_total`` inputs (zeros at the
        start, as one pass pads) are the left context of the next piece."""
        pad = int(layer.padding_total)
        context = self._context.get(layer)
        if context is None:
            context = x.new_zeros(x.shape[0], x.shape[1], pad)
        full = torch.cat([context, x], dim=-1)
        self._context[layer] = full[..., full.shape[-1] - pad:].clone()
        return layer.conv(full)

    def _conv_transposed(self, layer: MimiConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
        """Causal transposed convolution (all trimming on the right): the first
        ``stride * n`` outputs are final once the previous tail is added; the last
        ``kernel - stride`` still await the next input. The bias is added to emitted
        samples only, so a tail never carries it twice."""
        conv = layer.conv
        if conv not in _TAP_MATRICES:
            _TAP_MATRICES[conv] = _tap_matrix(conv)
        matrix = _TAP_MATRICES[conv]
        if matrix is None:
            y = torch.nn.functional.conv_transpose1d(x, conv.weight, None, conv.stride, 0, 0,
                                                     conv.groups)
        else:
            y = _tap_transposed(x, matrix, conv.stride[0])
        tail = self._tails.get(layer)
        if tail is not None:
            y[..., : tail.shape[-1]] += tail
        n = x.shape[-1] * conv.stride[0]
        self._tails[layer] = y[..., n:].clone()
        y = y[..., :n]
        return y if conv.bias is None else y + conv.bias[:, None]


#: per transposed convolution of a model, its _tap_matrix (made once, shared by streams)
_TAP_MATRICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tap_matrix(conv: torch.nn.ConvTranspose1d) -> torch.Tensor | None:
    """A transposed convolution of kernel 2s and stride s as one matrix [2 in, out * s]:
    output samples j*s .. j*s + s - 1 are input frames j - 1 and j (stacked) times it (the
    2-tap form of encodec's ``streaming._tap_weight``). None for other layers (the
    grouped upsampling), which keep torch's ``conv_transpose1d``.

    Why: the decoder's first SEANet layer (1024 -> 512 channels, kernel 16, stride 8;
    32 MB of weights) took 86-90 ms a call in ``conv_transpose1d`` on a live frame's 2
    inputs, one thread; as a matrix product, ~12 ms (reading the weights once)."""
    s, k = conv.stride[0], conv.kernel_size[0]
    if conv.groups != 1 or k != 2 * s or conv.padding[0] or conv.dilation[0] != 1 \
            or conv.output_padding[0]:
        return None
    w = conv.weight.detach()  # [in, out, 2s]
    cin, cout = w.shape[0], w.shape[1]
    return torch.cat([w[:, :, s:].reshape(cin, cout * s),
                      w[:, :, :s].reshape(cin, cout * s)]).contiguous()


def _tap_transposed(x: torch.Tensor, matrix: torch.Tensor, s: int) -> torch.Tensor:
    """conv_transpose1d(x) [B, out, (T + 1) s] of x [B, in, T] by :func:`_tap_matrix`."""
    b, _, t = x.shape
    padded = torch.nn.functional.pad(x, (1, 1))
    frames = torch.cat([padded[..., :-1], padded[..., 1:]], dim=1).transpose(1, 2)
    y = frames @ matrix  # [B, T + 1, out * s]
    cout = matrix.shape[1] // s
    return y.view(b, t + 1, cout, s).permute(0, 2, 1, 3).reshape(b, cout, (t + 1) * s)


def _kv_elements(cache: DynamicCache) -> int:
    """Elements of the keys and values a KV cache holds (at most ``sliding_window - 1``
    steps per layer)."""
    return sum(layer.keys.numel() + layer.values.numel()
               for layer in cache.layers if layer.is_initialized)


def _check_streamable_decoder(model: MimiModel) -> None:
    """ModelError unless the decoder is what :class:`StreamDecoder` streams exactly:
    causal stride-1 zero-padded convolutions, transposed convolutions trimmed on the
    right only, and the upsampling layer (12.5 -> 25 Hz)."""
    decoder = model.decoder
    if decoder is None or decoder.upsample is None:
        raise ModelError("StreamDecoder needs Mimi's decoder with its upsampling layer")
    for module in [decoder.upsample, *decoder.decoder_seanet.modules()]:
        if isinstance(module, MimiConv1d):
            ok = module.causal and int(module.stride) == 1 and module.pad_mode == "constant"
        elif isinstance(module, MimiConvTranspose1d):
            ok = module.causal and module.padding_left == 0
        else:
            continue
        if not ok:
            raise ModelError(f"cannot stream this Mimi decoder: {module!r} is not a causal "
                             "stride-1 zero-padded convolution or right-trimmed transposed one")
