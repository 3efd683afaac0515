"""DAC through transformers' DacModel: official configs, the test model, windowed streams.

DAC is not causal: every code depends on audio on both sides of its frame, so a long
signal cannot be run layer by layer like a causal codec. :class:`WindowedEncoder` and
:class:`WindowedDecoder` cut the stream into windows of a fixed number of frames on a
fixed grid and give each window enough real context on both sides that what they keep
is what one pass over the whole signal computes.

Receptive fields (:func:`encoder_context`, :func:`decoder_context`; the tests check
them against autograd). Every layer is a convolution of kernel 7 (dilations 1, 3, 9 in
each residual unit), a strided one of kernel 2s, or a transposed one; following what
each reads, back from one frame to the input: at 44.1 kHz frame t's code depends on
samples t*512 - 3733 .. t*512 + 511 + 3733 (8 frames on each side), at 24 and 16 kHz on
t*320 - 2501 .. t*320 + 319 + 2493 (8 frames). A frame's decoded samples depend on the
codes of frames t - 10 .. t + 10. The context is computed layer by layer (what a kept
output reads must lie inside the window at every layer, so the zeros a convolution pads
at a window's edge never reach it), in whole frames so windows stay on the hop grid.

Windows. The streams keep :data:`ENCODER_WINDOW_FRAMES` = 192 and
:data:`DECODER_WINDOW_FRAMES` = 128 frames per window (2.2 s and 1.5 s at 44.1 kHz) and
read 8 + 8 (encoder) or 10 + 10 (decoder) frames more: 8.3 % and 15.6 % more computation
than one pass. They are that small so that a window's largest activations (at 44.1 kHz, 64
channels at the full rate in the encoder, 96 in the decoder: 35.7 and 54.3 MB for windows
of 256) stay under the 32 MB above which glibc maps every block afresh and unmaps it when
freed: with windows of 256 a 15 s encode spent 22 of its 27 s faulting those pages in
(5.4 M faults), a decode 36 of 53 s; with these windows and freed blocks kept in the heap
(``memory.keep_freed_memory``) 14.0 s and 30.9 s, the same codes. A window runs
once all it reads has arrived; its place depends only on stream positions, never on
piece sizes, so codes and audio do not depend on how the input was fed (bit for bit).
The first window starts at sample 0 and the last ends where one pass ends (the signal
right-padded with zeros to a whole frame, as :func:`reference_encode`), so the true
edges see the same zero padding as in one pass. What can still differ from one pass is
float rounding: a convolution over another length may sum in another order (oneDNN
picks kernels by shape; torch sends small ones to its own kernels), and a code changes
only where two codes are within that rounding of a tie.

Measured (test model of dac_44khz, 9 codebooks, 30 s of speech: two corpus files, 8 kHz
resampled to 44.1 kHz; a shared 2-core Xeon with AVX-512 under a load of ~3):

* codes windowed vs one pass: 23256 of 23256 equal at 1 thread and at 2 threads (and 1
  vs 2 threads equal too);
* decoded audio windowed vs one pass: max abs difference 2.8e-7 (audio peak 0.28);
* real-time factors at 2 threads (windows of 256 then): encode 1.87 windowed (one pass
  1.64), decode 3.0 windowed (one pass 3.8; peak memory 4.0 GB, windowed 1.6 GB); timed
  under that load.

Lengths: n samples give ceil(n / hop) frames (0 samples: none), and frames give
frames * hop samples. One pass of the 24 and 16 kHz decoders returns 8 samples fewer
(its stride-5 transposed convolution, kernel 10 and padding 3, crops one sample more
than it adds); the windowed decoder gives zeros for those.

Test model. :func:`build_test_model` is an official architecture with seeded weights
and codebooks fitted so that codes are varied and the same on every CPU, following the
recipe of :mod:`tokpack.codec.testmodels`:

* DacModel has no weight norm (the hub checkpoints store plain weights: transformers'
  conversion removes it), so there are no gains to compute; every weight is an
  integer drawn from torch's CPU generator times a power of two (exact everywhere),
  and transformers' own initialisation is skipped (the model is built on the meta
  device);
* the encoder runs in float64 on :data:`TRAIN_SECONDS` of synthetic sound; its last
  bias centres the output (why: :mod:`tokpack.codec.testmodels`);
* level by level, the projected residuals ``in_proj(r)`` (8 dims) are jittered
  (:data:`TRAIN_COPIES` copies), L2-normalised as DacVectorQuantize's lookup does, and
  clustered by float64 k-means; a codebook row is its cluster's mean projected residual
  (the lookup sees only its direction, out_proj also its size), rounded to a 2^-16
  grid; the next residual subtracts ``out_proj`` of the rows the real lookup picks;
* the decoder's first conv is scaled up (:data:`DECODER_IN_BOUND`) so that speech
  decodes at about -26 dBFS rms instead of -100 dBFS.

Measured: built in 5-11 s at 2 threads (the shared machine's load varied); the same
:data:`tokpack.codec.testmodels.REFERENCE_SHA256` with 1 or 2 threads and with ``ATEN_CPU_CAPABILITY`` avx2 and
default; 441, 441, 418 and 420 distinct codes in the first 4 codebooks on 10 s of
speech. Its audio is not speech; never present it as DAC's quality.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import DacConfig, DacModel
from transformers.models.dac.modeling_dac import Snake1d

from tokpack.codec.testmodels import (
    SEED,
    _fast_threads,
    _kmeans,
    _nearest,
    _on_grid,
    synthetic_training_audio,
)
from tokpack.codec.threads import torch_threads
from tokpack.errors import ModelError, TokensError, UsageError

#: tokpack's model name -> the Hugging Face repository of the official weights
REPO_IDS = {
    "dac_44khz": "descript/dac_44khz",
    "dac_24khz": "descript/dac_24khz",
    "dac_16khz": "descript/dac_16khz",
}

#: config.json of each repository, the keys DacConfig reads (``architectures`` and
#: ``torch_dtype`` left out). All three say ``hop_length: 512``, the 24 and 16 kHz ones
#: wrongly (their hop is 2*4*5*8 = 320): the conversion script built them from a default
#: DacConfig and changed the ratios after. DacConfig keeps a given hop_length, so
#: ``config.hop_length`` is 512 for every official model; use :func:`hop_length`.
_COMMON = {
    "codebook_dim": 8,
    "codebook_loss_weight": 1.0,
    "codebook_size": 1024,
    "commitment_loss_weight": 0.25,
    "decoder_hidden_size": 1536,
    "encoder_hidden_size": 64,
    "hidden_size": 1024,
    "hop_length": 512,
    "quantizer_dropout": 0.0,
}
_OFFICIAL = {
    "dac_44khz": {"downsampling_ratios": [2, 4, 8, 8], "upsampling_ratios": [8, 8, 4, 2],
                  "n_codebooks": 9, "sampling_rate": 44100},
    "dac_24khz": {"downsampling_ratios": [2, 4, 5, 8], "upsampling_ratios": [8, 5, 4, 2],
                  "n_codebooks": 32, "sampling_rate": 24000},
    "dac_16khz": {"downsampling_ratios": [2, 4, 5, 8], "upsampling_ratios": [8, 5, 4, 2],
                  "n_codebooks": 12, "sampling_rate": 16000},
}

#: frames the windowed encoder keeps per window (2.2 s at 44.1 kHz, 2.6 s at 24 kHz, 3.8 s
#: at 16 kHz): a window's activations then stay under 32 MB (module doc)
ENCODER_WINDOW_FRAMES = 192
#: frames the windowed decoder keeps per window (1.5 s at 44.1 kHz)
DECODER_WINDOW_FRAMES = 128

#: test model: seconds of synthetic audio the codebooks are fitted to, in pieces of
#: TRAIN_PIECE_FRAMES frames, each encoded in float64
TRAIN_SECONDS = 2.0
TRAIN_PIECE_FRAMES = 43
#: k-means points per training frame (jittered copies) and the jitter, relative to the
#: projected residual's std per dimension
TRAIN_COPIES = 8
JITTER = 0.3
KMEANS_ITERS = 4
#: seeded weights lie on a grid of 2^-WEIGHT_GRID_BITS of a power-of-two bound
WEIGHT_GRID_BITS = 12
#: bound of the test model's Conv1d weights (uniform, std 0.018: transformers draws 0.02)
CONV_BOUND = 2.0**-5
#: bound of its decoder's first conv: the test model's quantized latents are ~1e-4 (a
#: trained DAC's are O(1)), which this brings back to a trained decoder's working range
DECODER_IN_BOUND = 2.0**6


def official_config(name: str) -> DacConfig:
    """The DacConfig of official model ``name`` (a key of :data:`REPO_IDS`), built offline
    with exactly the values of the repository's config.json."""
    if name not in _OFFICIAL:
        raise ModelError(f"unknown DAC model {name!r}; known: {', '.join(sorted(_OFFICIAL))}")
    return DacConfig(**_COMMON, **_OFFICIAL[name])


def hop_length(config: DacConfig) -> int:
    """Samples per frame: the product of the encoder's strides (not ``config.hop_length``,
    which is 512 in every official config.json; ``config.frame_rate`` is right but rounded
    up: 87 at 44.1 kHz for 86.13)."""
    return math.prod(config.downsampling_ratios)


def build_model(config: DacConfig) -> DacModel:
    """A DacModel for ``config`` (transformers' random initialisation, for weights to be
    loaded into), in eval mode, float32."""
    return DacModel(config).eval().float()


# ------------------------------------------------------------------ receptive fields


@dataclass(frozen=True)
class _Conv:
    """What a (transposed) convolution of DacModel reads: output positions -> input ones."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    transposed: bool = False

    def reads(self, lo: int, hi: int) -> tuple[int, int]:
        """First and last input position that outputs ``lo``..``hi`` depend on."""
        span = self.dilation * (self.kernel - 1)
        if self.transposed:  # output o = i * stride - padding + tap
            return -((span - lo - self.padding) // self.stride), (hi + self.padding) // self.stride
        return lo * self.stride - self.padding, hi * self.stride - self.padding + span


def _residual_units() -> list[_Conv]:
    # DacResidualUnit: x + conv1x1(snake(conv7_dilated(snake(x)))); the 1x1 conv and the
    # skip read nothing beyond the dilated conv's reach
    return [_Conv(7, padding=3 * d, dilation=d) for d in (1, 3, 9)]


def _encoder_convs(config: DacConfig) -> list[_Conv]:
    convs = [_Conv(7, padding=3)]
    for s in config.downsampling_ratios:
        convs += _residual_units()
        convs.append(_Conv(2 * s, s, math.ceil(s / 2)))
    return convs + [_Conv(3, padding=1)]


def _decoder_convs(config: DacConfig) -> list[_Conv]:
    convs = [_Conv(7, padding=3)]
    for s in config.upsampling_ratios:
        convs.append(_Conv(2 * s, s, math.ceil(s / 2), transposed=True))
        convs += _residual_units()
    return convs + [_Conv(7, padding=3)]


def _context(convs: list[_Conv], per_frame: int) -> tuple[int, int]:
    """Frames of context (left, right) that one frame's outputs (``per_frame`` positions
    per frame at the output) need so that, at every layer, all they read lies inside the
    window: then no zero padding at a window's edge reaches them."""
    lo, hi = 0, per_frame - 1
    left = right = 0
    for conv in reversed(convs):
        lo, hi = conv.reads(lo, hi)
        per_frame = per_frame // conv.stride if conv.transposed else per_frame * conv.stride
        left = max(left, -(lo // per_frame))
        right = max(right, -(-(hi - per_frame + 1) // per_frame))
    return left, right


def encoder_context(config: DacConfig) -> tuple[int, int]:
    """Frames (left, right) around a frame that its code depends on through the encoder."""
    return _context(_encoder_convs(config), 1)


def decoder_context(config: DacConfig) -> tuple[int, int]:
    """Frames (left, right) around a frame that its decoded samples depend on."""
    return _context(_decoder_convs(config), hop_length(config))


# ---------------------------------------------------------------- one-pass reference


def reference_encode(model: DacModel, x: torch.Tensor, n_q: int) -> np.ndarray:
    """Codes uint16 [n_q, ceil(n / hop)] of ``x`` float32 [1, n] in one pass, as DAC does
    it: right-padded with zeros to a whole number of frames (descript-audio-codec's
    ``preprocess``), then ``model.encode``. Memory grows with n; see WindowedEncoder."""
    _check_n_q(model, n_q)
    x = _check_audio(x)
    hop = hop_length(model.config)
    frames = -(-x.shape[1] // hop)
    if frames == 0:
        return np.zeros((n_q, 0), dtype=np.uint16)
    x = nn.functional.pad(x, (0, frames * hop - x.shape[1]))
    with torch.inference_mode():
        codes = model.encode(x[None], n_quantizers=n_q).audio_codes[0]
    return codes.numpy().astype(np.uint16)


def reference_decode(model: DacModel, codes: np.ndarray) -> torch.Tensor:
    """Audio float32 [1, m] of ``codes`` [n_q, frames] in one pass (``model.decode``):
    m = frames * hop at 44.1 kHz; 8 samples less for the 24 and 16 kHz models, whose
    stride-5 transposed convolution crops one sample more than it adds."""
    codes = _check_codes(model, codes)
    if codes.shape[1] == 0:
        return torch.zeros(1, 0)
    with torch.inference_mode():
        return model.decode(audio_codes=torch.from_numpy(codes.astype(np.int64))[None]).audio_values


# ------------------------------------------------------------------ windowed streams


class _Queue:
    """Consecutive pieces of a stream (samples [T] or codes [n_q, T]) from a position on.

    Pieces are kept as given until a window needs them, so feeding one sample at a time
    costs no copy per call; :meth:`own` copies the caller's last piece (the part still
    held) so that a caller may reuse its buffer."""

    def __init__(self) -> None:
        self.pieces: list[np.ndarray] = []
        self.start = 0  # stream position of pieces[0][..., 0]
        self.end = 0  # stream position after the last piece
        self.fresh = False  # pieces[-1] (if any) is the caller's memory

    def push(self, piece: np.ndarray) -> None:
        if piece.shape[-1]:
            self.pieces.append(piece)
            self.end += piece.shape[-1]
            self.fresh = True

    def take(self, a: int, b: int, pad_to: int) -> np.ndarray:
        """Positions [a, b) (a >= start), zeros past the stream's end, up to ``pad_to``."""
        parts, pos = [], self.start
        for piece in self.pieces:
            n = piece.shape[-1]
            if pos + n > a and pos < b:
                parts.append(piece[..., max(a - pos, 0):min(b - pos, n)])
            pos += n
        out = np.concatenate(parts, axis=-1) if len(parts) != 1 else parts[0]
        missing = min(b, pad_to) - a - out.shape[-1]
        if missing > 0:
            out = np.concatenate([out, np.zeros(out.shape[:-1] + (missing,), out.dtype)], axis=-1)
        return out

    def drop_before(self, a: int) -> None:
        while self.pieces and self.start + self.pieces[0].shape[-1] <= a:
            self.start += self.pieces.pop(0).shape[-1]
        if self.pieces and self.start < a:
            self.pieces[0] = self.pieces[0][..., a - self.start:]
            self.start = a

    def own(self) -> None:
        if self.fresh and self.pieces:
            self.pieces[-1] = self.pieces[-1].copy()
        self.fresh = False


def _windows(done: int, available: int, total: int | None, window: int,
             left: int, right: int) -> Iterator[tuple[int, int, int, int]]:
    """(first, start, stop, last) frames of the windows that can run now: the window that
    keeps frames [start, stop) reads frames [first, last). Windows keep ``window`` frames
    from a multiple of ``window`` on and read ``left``/``right`` frames around them,
    clipped to the stream: ``total`` frames once known (None before), and while it is not,
    a window runs only once all ``available`` frames it reads are there."""
    start = done
    while total is None or start < total:
        stop = start + window if total is None else min(start + window, total)
        last = stop + right if total is None else min(stop + right, total)
        if total is None and last > available:
            return
        yield max(start - left, 0), start, stop, last
        start = stop


class WindowedEncoder:
    """Codes of a signal fed in pieces of any size, in bounded memory.

    DAC's encoder is not causal, so the signal is cut into windows on a fixed grid (frames
    [k W, (k+1) W), W = ``window_frames``), each encoded with :func:`encoder_context`
    frames of real signal either side and only its centre frames kept. Every kept frame
    then reads, at every layer, only values computed from real signal, as in one pass;
    the windows sit at the same places whatever the piece sizes, so the codes do not
    depend on how the signal was fed. The first window starts at sample 0 and the last
    one ends at the signal's end padded to a whole frame, so both edges get the zero
    padding of one pass. What differs from :func:`reference_encode` is float rounding:
    convolutions of other lengths can sum in other orders, and a near-tie between two
    codes can then go the other way.
    """

    def __init__(self, model: DacModel, n_q: int, *,
                 window_frames: int = ENCODER_WINDOW_FRAMES) -> None:
        _check_n_q(model, n_q)
        if window_frames < 1:
            raise UsageError(f"window_frames must be >= 1, got {window_frames}")
        self._model, self._n_q, self._window = model, n_q, window_frames
        self._hop = hop_length(model.config)
        self._left, self._right = encoder_context(model.config)
        self._device = next(model.parameters()).device  # windows go there, codes come back
        self._queue = _Queue()
        self._done = 0  # frames returned so far
        self._finished = False

    def feed(self, x: torch.Tensor) -> np.ndarray:
        """Append ``x`` float32 [1, n]; return the codes uint16 [n_q, k] now final."""
        if self._finished:
            raise UsageError("feed() after finish()")
        self._queue.push(_check_audio(x)[0].numpy())
        codes = self._run(None)
        self._queue.own()
        return codes

    def finish(self) -> np.ndarray:
        """The remaining codes: ceil(total / hop) frames in all."""
        if self._finished:
            raise UsageError("finish() called twice")
        self._finished = True
        return self._run(-(-self._queue.end // self._hop))

    def _run(self, total: int | None) -> np.ndarray:
        hop, out = self._hop, []
        for first, start, stop, last in _windows(self._done, self._queue.end // hop, total,
                                                 self._window, self._left, self._right):
            x = torch.from_numpy(self._queue.take(first * hop, last * hop, last * hop))
            with torch.inference_mode():
                x = x.to(self._device)[None, None]
                emb = self._model.encoder(x)[..., start - first:stop - first]
                codes = self._model.quantizer(emb, self._n_q)[1][0]
            out.append(codes.cpu().numpy().astype(np.uint16))
            self._done = stop
            self._queue.drop_before(max(stop - self._left, 0) * hop)
        return np.concatenate(out, axis=1) if out else np.zeros((self._n_q, 0), np.uint16)


class WindowedDecoder:
    """Audio of codes fed in pieces of any size, in bounded memory.

    The decoder's counterpart of :class:`WindowedEncoder`: windows of ``window_frames``
    frames on a fixed grid, decoded with :func:`decoder_context` frames either side,
    keeping the centre samples. Over all calls it returns frames * hop samples; where the
    one-pass decoder returns fewer (8 samples short at 24 and 16 kHz, see
    :func:`reference_decode`) the missing tail is zeros.
    """

    def __init__(self, model: DacModel, *, window_frames: int = DECODER_WINDOW_FRAMES) -> None:
        if window_frames < 1:
            raise UsageError(f"window_frames must be >= 1, got {window_frames}")
        self._model, self._window = model, window_frames
        self._hop = hop_length(model.config)
        self._left, self._right = decoder_context(model.config)
        self._device = next(model.parameters()).device  # windows go there, audio comes back
        self._queue = _Queue()
        self._n_q: int | None = None
        self._done = 0
        self._finished = False

    def feed(self, codes: np.ndarray) -> torch.Tensor:
        """Append ``codes`` [n_q, T]; return the audio float32 [1, m] now final."""
        if self._finished:
            raise UsageError("feed() after finish()")
        codes = _check_codes(self._model, codes)
        if self._n_q is None:
            self._n_q = codes.shape[0]
        elif codes.shape[0] != self._n_q:
            raise TokensError(f"codes have {codes.shape[0]} codebooks, earlier ones {self._n_q}")
        self._queue.push(codes)
        audio = self._run(None)
        self._queue.own()
        return audio

    def finish(self) -> torch.Tensor:
        """The remaining audio: frames * hop samples in all."""
        if self._finished:
            raise UsageError("finish() called twice")
        self._finished = True
        return self._run(self._queue.end)

    def _run(self, total: int | None) -> torch.Tensor:
        hop, out = self._hop, []
        for first, start, stop, last in _windows(self._done, self._queue.end, total,
                                                 self._window, self._left, self._right):
            codes = torch.from_numpy(self._queue.take(first, last, last).astype(np.int64))
            with torch.inference_mode():
                audio = self._model.decode(audio_codes=codes[None].to(self._device))
                audio = audio.audio_values.cpu()
            audio = audio[:, (start - first) * hop:(stop - first) * hop]
            short = (stop - start) * hop - audio.shape[1]
            out.append(nn.functional.pad(audio, (0, short)) if short else audio)
            self._done = stop
            self._queue.drop_before(max(stop - self._left, 0))
        return torch.cat(out, dim=1) if out else torch.zeros(1, 0)


def _check_n_q(model: DacModel, n_q: int) -> None:
    if not 1 <= n_q <= model.config.n_codebooks:
        raise UsageError(f"n_q must be 1..{model.config.n_codebooks}, got {n_q}")


def _check_audio(x: torch.Tensor) -> torch.Tensor:
    if (not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] != 1
            or x.dtype != torch.float32):
        raise UsageError(f"audio must be a float32 tensor [1, n], got {_describe(x)}")
    return x.detach().cpu()


def _check_codes(model: DacModel, codes: np.ndarray) -> np.ndarray:
    if (not isinstance(codes, np.ndarray) or codes.ndim != 2
            or not np.issubdtype(codes.dtype, np.integer)):
        raise TokensError(f"codes must be an integer array [n_q, T], got {_describe(codes)}")
    if not 1 <= codes.shape[0] <= model.config.n_codebooks:
        raise TokensError(f"codes have {codes.shape[0]} codebooks; "
                          f"the model has {model.config.n_codebooks}")
    if codes.size and (codes.min() < 0 or codes.max() >= model.config.codebook_size):
        raise TokensError(f"codes must lie in 0..{model.config.codebook_size - 1}")
    return codes


def _describe(value: object) -> str:
    shape = tuple(getattr(value, "shape", ()))
    return f"{type(value).__name__} {getattr(value, 'dtype', '')} {shape}"


# ----------------------------------------------------------------------- test model


def build_test_model(name: str = "dac_44khz") -> DacModel:
    """The test model of official model ``name``: its architecture, seeded weights and
    codebooks fitted to its encoder's output on synthetic audio (the module doc says how
    and why). The caller's random state is left untouched."""
    config = official_config(name)
    with torch.device("meta"):  # skip transformers' initialisation: every value is set below
        model = DacModel(config)
    model = model.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]), torch.no_grad(), torch_threads(1):
        torch.manual_seed(SEED)
        _seed_weights(model)
        _fit_codebooks(model)
    return model.eval()


def _grid_uniform(shape: torch.Size, bound: float) -> torch.Tensor:
    """Uniform in [-bound, bound] on a grid of bound * 2^-WEIGHT_GRID_BITS: integers from
    torch's CPU generator, scaled by a power of two, so exact and alike on every CPU."""
    steps = 2**WEIGHT_GRID_BITS
    return torch.randint(-steps, steps + 1, shape).float() * (bound / steps)


def _seed_weights(model: DacModel) -> None:
    """Every parameter of ``model`` (built on the meta device, so all are unset): weights
    at transformers' scales, biases zero, Snake alphas one, codebooks zero until fitted."""
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose1d):
            # transformers keeps torch's default here: kaiming-uniform, bound 1/sqrt(fan_in)
            fan_in = module.weight.shape[1] * module.weight.shape[2]
            bound = 2.0 ** round(math.log2(1 / math.sqrt(fan_in)))
            module.weight.copy_(_grid_uniform(module.weight.shape, bound))
            module.bias.zero_()
        elif isinstance(module, nn.Conv1d):
            bound = DECODER_IN_BOUND if module is model.decoder.conv1 else CONV_BOUND
            module.weight.copy_(_grid_uniform(module.weight.shape, bound))
            module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.zero_()  # fitted later
        elif isinstance(module, Snake1d):
            module.alpha.fill_(1.0)


def _fit_codebooks(model: DacModel) -> None:
    """Centre the encoder's output and fit every codebook to it, level by level, as the
    module doc describes; all in float64, every value set on a grid."""
    config = model.config
    hop = hop_length(config)
    piece = TRAIN_PIECE_FRAMES * hop
    n_pieces = max(1, round(TRAIN_SECONDS * config.sampling_rate / piece))
    seconds = n_pieces * piece / config.sampling_rate
    audio = synthetic_training_audio(config.sampling_rate, 1, seconds)[0, : n_pieces * piece]
    x = torch.from_numpy(audio.astype(np.float64)).reshape(n_pieces, 1, piece)
    encoder = model.encoder.double()  # float32 -> float64 -> float32 is exact
    with torch_threads(_fast_threads()):
        emb = encoder(x)  # [pieces, D, frames]
    model.encoder.float()
    residual = emb.transpose(1, 2).reshape(-1, emb.shape[1]).contiguous()
    # centre the encoder's output through its last bias (why: tokpack.codec.testmodels)
    bias = model.encoder.conv2.bias
    old = bias.detach().double()
    bias.copy_(_on_grid(old - residual.mean(dim=0)))
    residual += bias.detach().double() - old
    gen = torch.Generator().manual_seed(SEED)
    for quantizer in model.quantizer.quantizers:
        w_in = quantizer.in_proj.weight.detach().double()[:, :, 0]
        z = residual @ w_in.t() + quantizer.in_proj.bias.detach().double()
        copies = z.repeat(TRAIN_COPIES, 1)
        noise = torch.randn(copies.shape, generator=gen, dtype=torch.float64)
        noisy = copies + JITTER * z.std(dim=0) * noise
        unit = nn.functional.normalize(noisy, dim=1)
        means, _ = _kmeans(unit, config.codebook_size, KMEANS_ITERS, gen)
        assign = _nearest(unit, means)
        counts = torch.bincount(assign, minlength=config.codebook_size).double()
        sums = torch.zeros(config.codebook_size, z.shape[1], dtype=torch.float64)
        sums.index_add_(0, assign, noisy)
        # a codebook row is the mean projected residual of its cluster (the lookup only
        # sees its direction, out_proj its size); an empty cluster keeps its k-means direction
        scale = noisy.norm(dim=1).mean()
        book = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None],
                           nn.functional.normalize(means, dim=1) * scale)
        book = _on_grid(book)
        quantizer.codebook.weight.copy_(book)
        book = book.double()
        unit_book = nn.functional.normalize(book, dim=1)
        chosen = (nn.functional.normalize(z, dim=1) @ unit_book.t()).argmax(dim=1)
        w_out = quantizer.out_proj.weight.detach().double()[:, :, 0]
        b_out = quantizer.out_proj.bias.detach().double()
        residual = residual - (book[chosen] @ w_out.t() + b_out)
