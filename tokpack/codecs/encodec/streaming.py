"""EnCodec on signals of any length in bounded memory (imports torch and encodec).

Two models, two ways:

* **Causal (encodec_24khz): true streaming.** :class:`CausalEncoder` and
  :class:`CausalDecoder` run EnCodec's SEANet layer by layer on pieces of the signal.
  Every convolution keeps the input samples its next window still needs (its causal
  left context), the LSTMs keep their ``(h, c)``, and every transposed convolution keeps
  its last input frame. The first piece gets EnCodec's reflect padding at the signal's
  start, the last one EnCodec's "extra" right padding, computed from each layer's total
  input length. Each output sample is then computed from the same inputs, weights and
  operations as in a one-pass run.
* **Segmented (encodec_48khz): batched segments.** Its 1 s segments are independent;
  :class:`SegmentEncoder` and :class:`SegmentDecoder` run full segments in batches.

Exactness. Guaranteed on every CPU: the streamed encoder makes the same calls (pieces
of the same sizes, see :class:`_Stage`) however the signal is fed, since they depend on
its total length alone; so its codes do not depend on the feeding, at any thread count.
Against a one-pass ``model.encoder`` + quantizer it agrees within float rounding: every
output is computed from the same inputs, weights and operations, but oneDNN picks its
kernels, and splits a call's work between threads, by the call's shape and by the CPU,
and those round differently. Measured (docs/PERFORMANCE.md, "Determinism"): equal at one
thread on every kernel set tried, ~1 % of codes different at two threads with AVX-512
kernels, each time after a near-tie (:mod:`tokpack.codec.agreement`). One more condition
keeps the two close: torch's CPU dispatch (``use_mkldnn`` in
aten/src/ATen/native/Convolution.cpp) sends a float32 convolution of batch 1 to oneDNN
only when its input has more than :data:`MKLDNN_MIN_NUMEL` elements (a 1x1 kernel on one
thread never), and oneDNN rounds differently from torch's fallback. A one-pass run on a
long signal uses oneDNN everywhere, so the streams keep every call above that size:
pieces of at least ``reserve`` samples (frames). A signal shorter than
:func:`one_call_samples` runs in a single call per layer, which *is* the one-pass
computation.

Several signals at once (:func:`encode_batch`): one net, the signals in its batch while
they last, each signal's codes those of its own stream (measured, see there).

The streamed decoder is exact against one pass of itself. Its transposed convolutions
are computed as ordinary 2-tap convolutions (see :class:`_ConvTr`), which is faster
than torch's transposed-convolution path but sums in another order: its audio differs
from ``model.decoder``'s by float rounding (tests bound it).

Speed. Pieces of a few seconds stay in the CPU caches, where the one-pass model on a
long file is memory-bound (see docs/PERFORMANCE.md); weight normalisation is folded
into plain weights once at load (architecture.fold_weight_norm_state); the one-pass reflect padding of
every layer becomes a copy of a few context samples.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tokpack.codecs.encodec import channels_last

if TYPE_CHECKING:
    import torch
    from encodec import EncodecModel

#: torch sends a batch-1 float32 CPU convolution to oneDNN only above this many input
#: elements (see the module doc); every streamed call stays above it.
MKLDNN_MIN_NUMEL = 20480

#: segmented model: segments per batch
SEGMENT_BATCH = 8


# --------------------------------------------------------------------------- weights


def _weight(conv: torch.nn.Module) -> torch.Tensor:
    """The weight a conv module uses in forward (computed if still weight-normalised)."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            return hook.compute_weight(conv).detach()
    return conv.weight.detach()


# ------------------------------------------------------------------- streamed layers
#
# A layer is called as layer(state, x, final) -> y on consecutive pieces of its input
# [B, C, n]. `min_len` is the input length a call needs to stay on oneDNN's side of
# torch's size rule (0: no rule); `stride` the input samples per output sample. An
# encoder layer's `select(state, rows)` is its state for rows `rows` (a slice) of the
# batch alone: every state is per row, so those rows then go on as if streamed apart.


class _Conv:
    """EnCodec's SConv1d (causal) on a stream, with the ELU before it fused in."""

    def __init__(self, sconv, act_alpha: float | None) -> None:
        conv = sconv.conv.conv
        if not sconv.causal or not isinstance(sconv.conv.norm, _identity_type()):
            raise ValueError("only causal convolutions without a norm can be streamed")
        self.weight = _weight(conv)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.k = conv.kernel_size[0]
        self.s = conv.stride[0]
        self.d = conv.dilation[0]
        self.k_eff = (self.k - 1) * self.d + 1
        self.pt = (self.k - 1) * self.d - (self.s - 1)  # EnCodec's padding_total
        self.mode = sconv.pad_mode
        self.alpha = act_alpha
        self.channels = conv.in_channels
        self.stride = self.s
        self.rate = 1 / self.s  # output samples per input sample
        self.width = max(self.channels, conv.out_channels // self.s)
        # a first call reflects its first pt samples into the left padding: it needs more
        self.first_min = self.pt + 1 if self.mode == "reflect" else 1
        # the call sees pt kept samples + n new ones
        self.min_len = max(MKLDNN_MIN_NUMEL // self.channels + 1 - self.pt, 1)

    def new_state(self) -> list:
        return [None, 0]  # [kept input, total input length]

    def select(self, state: list, rows: slice) -> list:
        return [None if state[0] is None else state[0][rows], state[1]]

    def extra(self, total: int) -> int:
        """EnCodec's get_extra_padding_for_conv1d for a layer input of ``total`` samples."""
        n_frames = (total - self.k + self.pt) / self.s + 1
        ideal = (math.ceil(n_frames) - 1) * self.s + (self.k - self.pt)
        return ideal - total

    def __call__(self, state: list, x: torch.Tensor, final: bool) -> torch.Tensor:
        import torch
        import torch.nn.functional as F
        from encodec.modules.conv import pad1d

        kept = state[0]
        if self.alpha is not None:
            x = _elu(x, self.alpha, only_call=kept is None and final)
        state[1] += x.shape[-1]
        right = self.extra(state[1]) if final else 0
        if kept is None:  # the signal's start: EnCodec's own padding
            buf = pad1d(x, (self.pt, right), mode=self.mode)
        else:
            buf = torch.cat([kept, x], dim=-1) if kept.shape[-1] else x
            if right:
                buf = pad1d(buf, (0, right), mode=self.mode)
        n_out = (buf.shape[-1] - self.k_eff) // self.s + 1 if buf.shape[-1] >= self.k_eff else 0
        state[0] = buf[..., n_out * self.s:].clone()
        if n_out == 0:
            return x.new_zeros(x.shape[0], self.weight.shape[0], 0)
        return F.conv1d(buf, self.weight, self.bias, self.s, 0, self.d)


class _ConvTr:
    """EnCodec's causal SConvTranspose1d on a stream, as a 2-tap convolution.

    With kernel ``2s`` and stride ``s``, output sample ``j*s + r`` is
    ``W[:, :, r]·x[j] + W[:, :, r+s]·x[j-1]`` (+ bias): an ordinary convolution of kernel
    2 over the input frames with ``out*s`` output channels, then interleaved. The
    stream keeps one input frame (``x[j-1]``); EnCodec trims the last ``k - s``
    samples of a causal transposed conv, which is what stopping at ``x``'s end does.
    """

    def __init__(self, sconvtr, act_alpha: float | None) -> None:
        ct = sconvtr.convtr.convtr
        k, s = ct.kernel_size[0], ct.stride[0]
        if (not sconvtr.causal or sconvtr.trim_right_ratio != 1.0 or k != 2 * s
                or not isinstance(sconvtr.convtr.norm, _identity_type())):
            raise ValueError("only causal transposed convolutions with kernel 2*stride "
                             "and right trimming can be streamed")
        self.weight = _tap_weight(ct)
        cin, cout = ct.in_channels, ct.out_channels
        self.bias = None if ct.bias is None else ct.bias.detach()[:, None]
        self.s, self.cout = s, cout
        self.alpha = act_alpha
        self.channels = cin
        self.stride = 1
        self.rate = s
        self.width = max(cin, cout * s)
        self.first_min = 1
        self.min_len = MKLDNN_MIN_NUMEL // cin  # + the kept frame

    def new_state(self) -> list:
        return [None]

    def __call__(self, state: list, x: torch.Tensor, final: bool) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        kept = state[0]
        if self.alpha is not None:
            x = _elu(x, self.alpha, only_call=kept is None and final)
        n = x.shape[-1]
        if n == 0:
            return x.new_zeros(x.shape[0], self.cout, 0)
        # before the first frame, EnCodec's transposed conv has nothing: zeros
        buf = F.pad(x, (1, 0)) if kept is None else torch.cat([kept, x], dim=-1)
        state[0] = x[..., -1:].clone()
        return _tap_conv_transpose(buf, self.weight, self.bias, self.s, self.cout)


def _tap_weight(ct) -> torch.Tensor:
    """A ConvTranspose1d of kernel 2s, stride s as the weight [out*s, in, 2] of a 2-tap
    convolution over input frames: taps x[j-1] and x[j] give output samples j*s .. j*s+s-1."""
    import torch

    s = ct.stride[0]
    w = _weight(ct)  # [in, out, 2s]
    cin, cout = w.shape[0], w.shape[1]
    taps = torch.stack([w[:, :, s:], w[:, :, :s]], dim=-1)  # [in, out, s, 2]
    return taps.permute(1, 2, 0, 3).reshape(cout * s, cin, 2).contiguous()


def _tap_conv_transpose(x, weight, bias, s: int, cout: int):
    """Frames [B, in, n+1] -> [B, out, n*s]: the 2-tap convolution, interleaved."""
    import torch.nn.functional as F

    y = F.conv1d(x, weight)  # [B, out*s, n]
    b, n = y.shape[0], y.shape[-1]
    y = y.view(b, cout, s, n).transpose(2, 3).reshape(b, cout, n * s)
    if bias is not None:
        y += bias
    return y


def _tap_module(ct):
    """A drop-in for EnCodec's inner ConvTranspose1d (kernel 2s, stride s): the same
    full-length output ((n+1)*s samples), computed as a 2-tap convolution, which is
    several times faster than torch's transposed-convolution path on CPU."""
    import torch
    import torch.nn.functional as F

    class TapConvTranspose1d(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stride = ct.stride
            self.kernel_size = ct.kernel_size
            self.register_buffer("tap_weight", _tap_weight(ct))
            self.register_buffer("tap_bias", None if ct.bias is None
                                 else ct.bias.detach()[:, None].clone())
            self.cout = ct.out_channels

        def forward(self, x):
            return _tap_conv_transpose(F.pad(x, (1, 1)), self.tap_weight, self.tap_bias,
                                       self.stride[0], self.cout)

    return TapConvTranspose1d()


def segment_decoder(model: EncodecModel) -> torch.nn.Module:
    """``model.decoder`` with its transposed convolutions as 2-tap convolutions (a copy,
    cached; the model itself is unchanged). Its output equals ``model.decoder``'s within
    float rounding: the sums run in another order."""
    import copy

    from encodec.modules.conv import SConvTranspose1d

    plans = _PLANS.setdefault(model, {})
    if "segment_decoder" not in plans:
        dec = copy.deepcopy(model.decoder)
        for module in dec.modules():
            if isinstance(module, SConvTranspose1d):
                inner = module.convtr.convtr
                k, s = inner.kernel_size[0], inner.stride[0]
                if k == 2 * s and inner.padding[0] == 0 and inner.groups == 1 \
                        and inner.dilation[0] == 1:
                    module.convtr.convtr = _tap_module(inner)
        plans["segment_decoder"] = dec.eval()
    return plans["segment_decoder"]


class _LSTM:
    """EnCodec's SLSTM on a stream: the LSTM's (h, c) carries over."""

    def __init__(self, slstm, max_piece: int) -> None:
        self.lstm = slstm.lstm
        self.skip = slstm.skip
        self.channels = slstm.lstm.input_size
        self.stride = 1
        self.rate = 1
        self.width = 4 * slstm.lstm.hidden_size  # its gates
        self.first_min = 1
        lstm = slstm.lstm  # per layer: (W_ih, W_hh, b_ih + b_hh), for :meth:`live`
        self.cells = [(getattr(lstm, f"weight_ih_l{k}").detach(),
                       getattr(lstm, f"weight_hh_l{k}").detach(),
                       (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach())
                      for k in range(lstm.num_layers)]
        self.min_len = 0
        self.max_piece = max_piece

    def new_state(self) -> list:
        return [None]

    def select(self, state: list, rows: slice) -> list:
        # (h, c) are [layers, B, hidden]: contiguous again, as a batch-1 run's are
        return [None if state[0] is None else tuple(t[:, rows].contiguous() for t in state[0])]

    def __call__(self, state: list, x: torch.Tensor, final: bool) -> torch.Tensor:
        import torch

        if x.shape[-1] == 0:
            return x
        if x.shape[0] > 1:
            # a batch row by row: oneDNN's recurrent step multiplies h by a matrix as a
            # vector for one signal and as a matrix for several, and those round
            # differently (~1e-7 from the second frame on); one signal's call is exact
            rows = [self.select(state, slice(b, b + 1)) for b in range(x.shape[0])]
            y = torch.cat([self(row, x[b:b + 1], final) for b, row in enumerate(rows)])
            state[0] = tuple(torch.cat(parts, dim=1) for parts in zip(*(row[0] for row in rows)))
            return y
        x = x.permute(2, 0, 1)
        y, state[0] = self.lstm(x, state[0])
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)

    def live(self, state: list, x: torch.Tensor, final: bool) -> torch.Tensor:
        """The same LSTM step by step for the few frames of a live call: oneDNN's RNN
        primitive costs ~3 ms a call to set up, 100 times the arithmetic of 2 frames.
        Its sums run in another order than oneDNN's: within float rounding of it."""
        import torch
        import torch.nn.functional as F

        if x.shape[-1] == 0:
            return x
        x = x.permute(2, 0, 1)  # [T, B, C]
        lstm = self.lstm
        if state[0] is None:
            zeros = x.new_zeros(lstm.num_layers, x.shape[1], lstm.hidden_size)
            state[0] = (zeros, zeros)
        h0, c0 = state[0]
        y, hs, cs = x, [], []
        for layer, (w_ih, w_hh, bias) in enumerate(self.cells):
            gates_x = F.linear(y, w_ih, bias)
            h, c = h0[layer], c0[layer]
            out = []
            for t in range(x.shape[0]):
                i, f, g, o = (gates_x[t] + F.linear(h, w_hh)).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                out.append(h)
            y = torch.stack(out)
            hs.append(h)
            cs.append(c)
        state[0] = (torch.stack(hs), torch.stack(cs))
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


class _Act:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.channels = 1
        self.stride = 1
        self.rate = 1
        self.width = 1
        self.first_min = 1
        self.min_len = 0

    def new_state(self) -> list:
        return [False]  # [called before]

    def select(self, state: list, rows: slice) -> list:
        return list(state)

    def __call__(self, state: list, x: torch.Tensor, final: bool) -> torch.Tensor:
        only_call = final and not state[0]
        state[0] = True
        return _elu(x, self.alpha, only_call=only_call)


def _elu(x: torch.Tensor, alpha: float, *, only_call: bool) -> torch.Tensor:
    """The ELU before a layer: torch's for the layer's only call (the one-pass
    computation, bit for bit), else the compiled kernels' (channels_last.elu: within
    float rounding of torch's, several times faster)."""
    import torch.nn.functional as F

    return F.elu(x, alpha) if only_call else channels_last.elu(x, alpha)


class _ResBlock:
    """SEANetResnetBlock: shortcut(x) + block(x), both streamed (stride 1: aligned)."""

    def __init__(self, block) -> None:
        from encodec.modules.conv import SConv1d

        self.layers = _compile(list(block.block), MAX_PIECE)  # (no LSTM in a block)
        self.shortcut = _Conv(block.shortcut, None) if isinstance(block.shortcut, SConv1d) \
            else None
        parts = self.layers + ([self.shortcut] if self.shortcut else [])
        if any(p.stride != 1 for p in parts):
            raise ValueError("a residual block with a strided layer cannot be streamed")
        self.channels = parts[0].channels
        self.stride = 1
        self.rate = 1
        self.width = max(p.width for p in parts)
        self.first_min = max(p.first_min for p in parts)
        self.min_len = max(p.min_len for p in parts)

    def new_state(self) -> list:
        return [[layer.new_state() for layer in self.layers],
                None if self.shortcut is None else self.shortcut.new_state()]

    def select(self, state: list, rows: slice) -> list:
        return [[layer.select(st, rows) for layer, st in zip(self.layers, state[0])],
                None if self.shortcut is None else self.shortcut.select(state[1], rows)]

    def __call__(self, state: list, x: torch.Tensor, final: bool) -> torch.Tensor:
        y = x
        for layer, st in zip(self.layers, state[0]):
            y = layer(st, y, final)
        short = x if self.shortcut is None else self.shortcut(state[1], x, final)
        return short + y


def _identity_type():
    import torch

    return torch.nn.Identity


def _compile(modules: list, lstm_piece: int) -> list:
    """EnCodec SEANet modules -> streamed layers (an ELU is fused into the next conv);
    ``lstm_piece``: an LSTM's most signal samples per call."""
    import torch
    from encodec.modules.conv import SConv1d, SConvTranspose1d
    from encodec.modules.lstm import SLSTM
    from encodec.modules.seanet import SEANetResnetBlock

    layers: list = []
    alpha = None
    for module in modules:
        if isinstance(module, torch.nn.ELU):
            if alpha is not None:
                layers.append(_Act(alpha))
            alpha = module.alpha
            continue
        if isinstance(module, SConv1d):
            layers.append(_Conv(module, alpha))
        elif isinstance(module, SConvTranspose1d):
            layers.append(_ConvTr(module, alpha))
        else:
            if alpha is not None:
                layers.append(_Act(alpha))
            if isinstance(module, SLSTM):
                layers.append(_LSTM(module, lstm_piece))
            elif isinstance(module, SEANetResnetBlock):
                layers.append(_ResBlock(module))
            else:
                raise ValueError(f"cannot stream a {type(module).__name__}")
        alpha = None
    if alpha is not None:
        layers.append(_Act(alpha))
    return layers


class _Stage:
    """A layer behind an input buffer: calls of ``piece`` samples, ``reserve`` kept back.

    ``piece`` is what makes the layer's widest tensor about ``target`` elements, but at
    most :data:`MAX_PIECE` samples of the signal (``period``: signal samples per sample of
    the layer's input), so that no stage holds back more than a second or two of audio,
    or the layer's own ``max_piece`` (the encoder's LSTM: :data:`LSTM_MAX_PIECE`).
    The buffer keeps every call but the last at ``piece`` samples, cut to a multiple of
    the layer's stride, and keeps at least ``reserve`` (the layer's ``min_len``) for the
    last call, so that every call meets torch's size rule whenever a one-pass run over
    the whole signal would (see the module doc). A layer whose whole input is shorter
    is called once, with all of it: the one-pass computation itself.

    ``live``: the layer is called on all its pending input at every step, as soon as it
    can emit (its first call waits for ``first_min`` samples: EnCodec reflects a signal's
    first samples into its left padding). Small calls take torch's other convolution path
    for small inputs and round differently from one pass (docs/PERFORMANCE.md, "Live").
    """

    def __init__(self, layer, target: int, period: float, live: bool = False) -> None:
        self.layer = layer
        self.live = live
        self.period = period
        cap = max(int(getattr(layer, "max_piece", MAX_PIECE) // period), 1)
        piece = max(layer.min_len, min(target // layer.width, cap), 1)
        self.piece = -(-piece // layer.stride) * layer.stride
        self.reserve = layer.min_len

    def new_state(self) -> list:
        return [_Pieces(), self.layer.new_state(), False, False]  # [input, layer state, started, called]

    def select(self, state: list, rows: slice) -> list:
        pending = _Pieces()
        pending.parts = [part[rows] for part in state[0].parts]
        pending.n = state[0].n
        return [pending, self.layer.select(state[1], rows), state[2], state[3]]

    def run(self, state: list, x, final: bool):
        """Yields (output, is_final) for every call ``x`` (and ``final``) makes possible."""
        pending, layer_state = state[0], state[1]
        if x is not None and x.shape[-1]:
            pending.add(x)
            state[2] = True
        if self.live:
            if not final and pending.n >= (1 if state[3] else self.layer.first_min):
                state[3] = True
                call = getattr(self.layer, "live", self.layer)  # an LSTM's step by step
                yield call(layer_state, pending.take_all(), False), False
        else:
            while pending.n >= self.piece + self.reserve:
                yield self.layer(layer_state, pending.take(self.piece), False), False
        if final and state[2]:
            rest = pending.take_all()
            if rest is None:
                rest = x.new_zeros(*x.shape[:-1], 0)
            yield self.layer(layer_state, rest, True), True


#: elements of a layer's widest tensor per call, and the most signal samples per call
TARGET_ELEMS = 1 << 20
#: the decoder's: half, which lowered a 10-minute encode + decode's peak RSS (before the
#: process's exit) from 0.815 to 0.776 GB (AMD EPYC with AVX-512, 2 threads) and was no
#: slower (60 s: 1.78 against 1.90 s, medians of 6, alternating in one process); the
#: encoder's peak is under the decoder's
DECODER_TARGET_ELEMS = 1 << 19
MAX_PIECE = 1 << 15
#: the encoder LSTM's most signal samples per call (409 frames, 5.5 s at 24 kHz): its calls
#: have a fixed cost (oneDNN sets up its RNN primitive for each), which larger pieces
#: spread: 60 s at 24 kHz, 2 threads, medians of 8: encode 4.19 -> 3.72 s against
#: MAX_PIECE (102 frames); 2^18 bought nothing more
LSTM_MAX_PIECE = 1 << 17


class StreamedNet:
    """A SEANet encoder or decoder as buffered, streamed layers, run depth first.

    Each piece a layer emits goes through the following layers at once, so what is in
    flight is a few cache-sized pieces per layer whatever the input's length.
    """

    def __init__(self, layers: list, target: int | None = None, period: float = 1,
                 live: bool = False) -> None:
        """``target``: elements of a layer's widest tensor per call (default
        :data:`TARGET_ELEMS`); ``period``: signal samples per sample of the first
        layer's input (the hop length for a decoder fed frames); ``live``: every layer
        runs on what it has at once (:class:`_Stage`)."""
        target = TARGET_ELEMS if target is None else target
        self.stages = []
        for layer in layers:
            self.stages.append(_Stage(layer, target, period, live))
            period /= layer.rate
        self.state = [stage.new_state() for stage in self.stages]

    def select(self, rows: slice) -> StreamedNet:
        """An encoder net over rows ``rows`` of this one's batch, in their state here: it
        continues those signals as if each had been streamed alone from the start (a
        stage's pending input, and so the calls to come, do not depend on the batch)."""
        net = StreamedNet.__new__(StreamedNet)
        net.stages = self.stages
        net.state = [stage.select(st, rows) for stage, st in zip(self.stages, self.state)]
        return net

    def step(self, x: torch.Tensor, final: bool) -> list:
        """Feed ``x`` [B, C, n] (``final``: nothing follows); the net's outputs now ready."""
        out: list = []
        self._push(0, x, final, out)
        return out

    def _push(self, i: int, x, final: bool, out: list) -> None:
        if i == len(self.stages):
            if x.shape[-1]:
                out.append(x)
            return
        for y, is_final in self.stages[i].run(self.state[i], x, final):
            self._push(i + 1, y, is_final, out)


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan(model: EncodecModel, part: str) -> list:
    """The compiled (weights prepared) layers of model.encoder or model.decoder, cached."""
    plans = _PLANS.setdefault(model, {})
    if part not in plans:
        net = getattr(model, part)
        # the decoder's LSTM keeps MAX_PIECE: what follows it upsamples 320x, and 4x the
        # frames per call held ~40 MB more audio in flight (peak 0.806 GB for 10 min)
        plans[part] = _compile(list(net.model),
                               LSTM_MAX_PIECE if part == "encoder" else MAX_PIECE)
    return plans[part]


# ------------------------------------------------------------------ chunked drivers


class _Pieces:
    """Pending samples (frames) along the last axis, taken from the front."""

    def __init__(self) -> None:
        self.parts: list = []
        self.n = 0

    def add(self, x) -> None:
        if x.shape[-1]:
            self.parts.append(x)
            self.n += x.shape[-1]

    def take(self, n: int):
        import torch

        if self.parts[0].shape[-1] >= n:  # the common case: no concatenation
            first = self.parts[0]
            head, rest = first[..., :n], first[..., n:]
            self.parts[0:1] = [rest] if rest.shape[-1] else []
        else:
            whole = torch.cat(self.parts, dim=-1)
            head, rest = whole[..., :n], whole[..., n:]
            self.parts = [rest] if rest.shape[-1] else []
        self.n -= head.shape[-1]
        # contiguous, as a one-pass run's tensors are: torch's vectorised ELU computes the
        # tail of each row of a strided view with scalar code, which rounds differently
        return head.contiguous()

    def take_all(self):
        return self.take(self.n) if self.n else None


def one_call_samples(model: EncodecModel) -> int:
    """Signals shorter than this many samples go through every encoder layer in one call
    each, of the shapes a one-pass ``model.encoder`` call has: the one-pass computation
    itself, whatever kernels the CPU gets (longer ones agree with it within rounding).
    Conservative by a frame, for the layers' padding."""
    net = StreamedNet(_plan(model, "encoder"))
    most = min(int((stage.piece + stage.reserve) * stage.period) for stage in net.stages)
    return most - _hop(model)


class CausalEncoder:
    """Model-rate audio [C, n] in pieces -> codes uint16 [K, t] as they are final.

    The codes of all pieces, concatenated, are the same however ``x`` is cut into pieces,
    and agree with ``model.quantizer.vq.encode(model.encoder(x))`` of the whole signal
    within float rounding (equal below :func:`one_call_samples`; module doc).

    ``live``: each frame as soon as its samples are in (its calls then depend on the
    feeding, and agree with one pass within rounding: docs/PERFORMANCE.md, "Live").
    """

    def __init__(self, model: EncodecModel, n_q: int, *, live: bool = False) -> None:
        self.model = model
        self.n_q = n_q
        self.net = StreamedNet(_plan(model, "encoder"), live=live)

    def feed(self, x: torch.Tensor) -> np.ndarray:
        return self._codes(self.net.step(x[None], final=False))

    def finish(self) -> np.ndarray:
        import torch

        return self._codes(self.net.step(torch.zeros(1, self.model.channels, 0,
                                                     device=_device(self.model)), final=True))

    def _codes(self, embs: list) -> np.ndarray:
        return _joined([_quantizer(self.model).encode(e, self.n_q) for e in embs], self.n_q)


def _joined(codes: list, n_q: int) -> np.ndarray:
    """Code pieces [n_q, t] -> one uint16 array [n_q, frames]."""
    if not codes:
        return np.zeros((n_q, 0), np.uint16)
    import torch

    return torch.cat(codes, dim=-1).cpu().numpy().astype(np.uint16)


#: signals per batched net: from 16 rows on, torch sends a 1x1 convolution on one
#: thread to oneDNN, where a batch of 1 gets torch's own kernel (its dispatch rule,
#: module doc), and the two may round differently
MAX_BATCH_ROWS = 15
#: samples of each signal fed to a batched net per step (its stages cut their own pieces)
_FEED = 1 << 16


def encode_batch(model: EncodecModel, signals: list, n_q: int) -> list[np.ndarray]:
    """Signals [C, n] -> their codes [n_q, frames], each what a :class:`CausalEncoder`
    fed it alone and finished gives, the signals run together through one net.

    A causal net's calls on a signal's prefix do not depend on what follows, so the
    signals, shortest first, run as one batch over the prefix they all have; when the
    shortest ends, its rows of every layer's state (:meth:`StreamedNet.select`) finish
    alone, and the others go on together. Each row's calls are its batch-1 calls but
    for the batch dimension: the same pieces (a stage's buffer sets them, not the
    batch), on the same side of torch's dispatch rule (a batched convolution goes to
    oneDNN as a batch-1 piece does, a 1x1 one on one thread to torch's kernel while the
    batch has fewer than 16 rows: :data:`MAX_BATCH_ROWS`; the last call, maybe small,
    is made alone). The LSTMs and the quantizer run row by row. That oneDNN's batched
    convolutions round each row as its batch-1 ones do is measured, not guaranteed:
    identical codes and embeddings on AVX2 at 1 and 2 threads (tests/test_stream_batch.py
    compares the codes); a GPU's convolution algorithms, picked by shape, were not measured.
    """
    import torch

    quantizer = _quantizer(model)
    codes: list[list] = [[] for _ in signals]
    empty = torch.zeros(1, model.channels, 0, device=_device(model))

    def collect(embs: list, rows: list) -> None:  # net outputs [B, D, t] -> row i's codes
        for e in embs:
            for b, i in enumerate(rows):
                codes[i].append(quantizer.encode(e[b:b + 1], n_q))

    order = sorted(range(len(signals)), key=lambda i: signals[i].shape[-1])
    for start in range(0, len(order), MAX_BATCH_ROWS):
        rows = order[start:start + MAX_BATCH_ROWS]  # row b of the net is signal rows[b]
        net = StreamedNet(_plan(model, "encoder"))
        done = 0  # samples of each signal in the net fed so far
        while rows:
            end = signals[rows[0]].shape[-1]
            for a in range(done, end, _FEED):
                x = torch.stack([signals[i][:, a:min(a + _FEED, end)] for i in rows])
                collect(net.step(x, final=False), rows)
            done = end
            while rows and signals[rows[0]].shape[-1] == done:  # ends here: finish alone
                alone, net = net.select(slice(0, 1)), net.select(slice(1, None))
                collect(alone.step(empty, final=True), rows[:1])
                rows = rows[1:]
    return [_joined(c, n_q) for c in codes]


class CausalDecoder:
    """Codes [K, t] in pieces -> model-rate audio [C, t*hop] (float32 tensors).

    Exact against a single :meth:`feed` + :meth:`finish` of the whole code sequence
    (the same computation in one call); within float rounding of ``model.decoder``.
    """

    def __init__(self, model: EncodecModel, *, device=None, live: bool = False) -> None:
        self.model = model
        self.device = _device(model) if device is None else device
        self.net = StreamedNet(_plan(model, "decoder"), DECODER_TARGET_ELEMS,
                               period=_hop(model), live=live)
        self.channels = model.channels

    def feed(self, codes: np.ndarray):
        import torch

        c = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)).to(self.device)
        emb = self.model.quantizer.vq.decode(c[:, None, :])  # [1, D, t]
        return _cat_audio(self.net.step(emb, final=False), self.channels)

    def finish(self):
        import torch

        dim = self.model.quantizer.dimension
        empty = torch.zeros(1, dim, 0, device=self.device)
        return _cat_audio(self.net.step(empty, final=True), self.channels)


class _Quantizer:
    """``model.quantizer.vq.encode`` of one signal [1, D, t] -> codes [n_q, t], the same
    operations on the same tensors (so the same codes, bit for bit: tests compare), without
    recomputing each codebook's squared norms on every call (encodec does: 8 codebooks cost
    ~2 ms a call however few the frames, which a live call of one or two frames feels).
    The norms are kept per torch thread count, the one setting a reduction may depend on."""

    def __init__(self, model: EncodecModel) -> None:
        self.books = [layer._codebook.embed for layer in model.quantizer.vq.layers]
        self.norms: dict[int, list] = {}

    def encode(self, emb: torch.Tensor, n_q: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        threads = torch.get_num_threads()
        if threads not in self.norms:
            self.norms[threads] = [embed.t().pow(2).sum(0, keepdim=True) for embed in self.books]
        x = emb[0].t()  # [t, D], as encodec's rearrange "b d n -> (b n) d" for one signal
        out = []
        for embed, norm in zip(self.books[:n_q], self.norms[threads]):
            dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + norm)
            index = dist.max(dim=-1).indices
            out.append(index)
            x = x - F.embedding(index, embed)
        return torch.stack(out)


def _quantizer(model: EncodecModel) -> _Quantizer:
    plans = _PLANS.setdefault(model, {})
    if "quantizer" not in plans:
        plans["quantizer"] = _Quantizer(model)
    return plans["quantizer"]


def _hop(model) -> int:
    return int(np.prod(model.encoder.ratios))


def _device(model):
    return next(model.parameters()).device


def _cat_audio(parts: list, channels: int):
    """Net outputs [1, C, n] -> one [C, n] tensor."""
    import torch

    if not parts:
        return torch.zeros(channels, 0)
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))[0]


# ------------------------------------------------------------------ segmented model


@dataclass
class EncodedSegment:
    codes: np.ndarray  # uint16 [K, frames]
    scale: float


class SegmentEncoder:
    """Model-rate audio [C, n] in pieces -> encoded segments, full ones in batches.

    Segments start every ``stride`` samples below the signal's length and hold up to
    ``segment_length`` samples, as encodec cuts them; each is normalised by its own
    scale (RMS of the mono mix + 1e-8) like ``EncodecModel._encode_frame``.
    """

    def __init__(self, model: EncodecModel, n_q: int, segment_length: int, stride: int,
                 *, batch: int = SEGMENT_BATCH) -> None:
        self.model = model
        self.n_q = n_q
        self.length = segment_length
        self.stride = stride
        self.batch = max(1, batch)
        self.hop = int(np.prod(model.encoder.ratios))
        self.buf = _Pieces()
        self.base = 0  # absolute index of the buffer's first sample
        self.next_offset = 0  # start of the next segment to encode
        self.exact = False  # run model.encoder itself (set for signals of one segment)

    def feed(self, x: torch.Tensor) -> list[EncodedSegment]:
        self.buf.add(x)
        out: list[EncodedSegment] = []
        while True:
            # full segments available from next_offset on
            # a segment whose samples are all in is final: more signal cannot change it
            have = self.base + self.buf.n - self.next_offset
            n_full = 0 if have < self.length else (have - self.length) // self.stride + 1
            if n_full < self.batch:
                return out
            out.extend(self._encode_full(self.batch))

    def finish(self) -> list[EncodedSegment]:
        out: list[EncodedSegment] = []
        total = self.base + self.buf.n
        # at most one full segment: each encoded alone by encodec's own call (its codes)
        self.exact = self.next_offset == 0 and total < self.length + self.stride
        while self.next_offset < total:
            have = total - self.next_offset
            n_full = 0 if have < self.length else (have - self.length) // self.stride + 1
            if n_full:
                out.extend(self._encode_full(min(n_full, self.batch)))
            else:
                seg = self._window(self.next_offset, have)
                out.extend(self._encode(seg[None]))
                self.next_offset += self.stride
        return out

    def _window(self, start: int, n: int):
        import torch

        whole = torch.cat(self.buf.parts, dim=-1) if len(self.buf.parts) > 1 else self.buf.parts[0]
        self.buf.parts = [whole]
        rel = start - self.base
        return whole[:, rel:rel + n]

    def _encode_full(self, count: int) -> list[EncodedSegment]:
        import torch

        segs = torch.stack([self._window(self.next_offset + i * self.stride, self.length)
                            for i in range(count)])
        self.next_offset += count * self.stride
        self._drop_before(self.next_offset)
        return self._encode(segs)

    def _drop_before(self, start: int) -> None:
        whole = self._window(self.base, self.buf.n)
        cut = min(start - self.base, whole.shape[-1])
        if cut > 0:
            rest = whole[:, cut:].clone()
            self.buf.parts = [rest] if rest.shape[-1] else []
            self.buf.n = rest.shape[-1]
            self.base += cut

    def _encode(self, x: torch.Tensor) -> list[EncodedSegment]:
        """x [B, C, n] (equal lengths) -> one EncodedSegment per row."""
        import torch

        # the scales one segment at a time: a batched mean splits its sum over threads
        # differently, and the scale is stored in the container
        scale = torch.cat([_segment_scale(x[b:b + 1]) for b in range(x.shape[0])])
        encoder = self.model.encoder
        if self.exact or not _channels_last(self.model, encoder):
            emb = encoder(x / scale)  # exact: the call encodec makes, so its codes
        else:
            emb = channels_last.run(encoder, x / scale)
        codes = self.model.quantizer.vq.encode(emb, n_q=self.n_q)  # [K, B, t]
        codes = codes.cpu().numpy().astype(np.uint16)
        return [EncodedSegment(codes[:, b], float(scale[b].reshape(()).item()))
                for b in range(x.shape[0])]


def _channels_last(model: EncodecModel, net: torch.nn.Module) -> bool:
    """Whether ``net`` (model.encoder or model.decoder) runs in channels-last memory: on
    CPU, where oneDNN's convolutions are faster there (channels_last.py)."""
    return _device(model).type == "cpu" and channels_last.supported(net)


def _segment_scale(x: torch.Tensor) -> torch.Tensor:
    """EncodecModel._encode_frame's scale of a segment [1, C, n]: RMS of the mono mix + 1e-8."""
    mono = x.mean(dim=1, keepdim=True)
    volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
    return 1e-8 + volume


class SegmentDecoder:
    """Segments (codes [K, t], scale) in order -> model-rate audio [C, m] pieces.

    Segments with the same frame count are decoded in batches, multiplied by their
    scales, and joined by EnCodec's linear overlap-add (framing.OverlapAdd).
    """

    def __init__(self, model: EncodecModel, stride: int, *, batch: int = SEGMENT_BATCH) -> None:
        from tokpack.codecs.encodec.framing import OverlapAdd

        self.model = model
        self.batch = max(1, batch)
        self.adder = OverlapAdd(stride)
        self.pending: list[tuple[np.ndarray, float]] = []
        self.channels = model.channels

    def feed(self, segments) -> torch.Tensor:
        self.pending.extend(segments)
        out = []
        while len(self.pending) >= self.batch:
            out.extend(self._run(self.batch))
        return _cat_audio([o[None] for o in out], self.channels)

    def finish(self) -> torch.Tensor:
        out = []
        while self.pending:
            out.extend(self._run(len(self.pending)))
        tail = self.adder.finish()
        if tail is not None:
            out.append(tail)
        return _cat_audio([o[None] for o in out], self.channels)

    def _run(self, count: int) -> list:
        import torch

        n = self.pending[0][0].shape[1]
        same = 1
        while same < count and self.pending[same][0].shape[1] == n:
            same += 1
        group, self.pending = self.pending[:same], self.pending[same:]
        codes = torch.from_numpy(np.stack([c for c, _ in group], axis=1).astype(np.int64))
        codes = codes.to(_device(self.model))
        emb = self.model.quantizer.vq.decode(codes)
        decoder = self.model.decoder
        out = channels_last.run(decoder, emb) if _channels_last(self.model, decoder) \
            else segment_decoder(self.model)(emb)  # [B, C, n*hop]
        scales = torch.tensor([s for _, s in group], dtype=out.dtype)
        out = out * scales[:, None, None]
        return [self.adder.add(out[b]) for b in range(out.shape[0])]
