"""EnCodec's SEANet encoder and decoder run with their activations in channels-last memory.

Every activation is a ``[B, C, 1, T]`` tensor in torch's ``channels_last`` format, i.e.
time-major ``[B, T, C]`` in memory, and every convolution a ``conv2d`` over it. On CPU,
oneDNN's convolutions over few channels and long signals are several times faster in this
format than in torch's default ``[B, C, T]`` (measured here, 2 threads: EnCodec 48 kHz's
16 -> 32 1x1 convolution over 48,000 samples 10.3 -> 0.5 ms, 32 -> 64 kernel 4 stride 2
7.9 -> 2.9 ms), group norm and the reflect padding are faster too, the LSTM reads its
``[T, B, C]`` input without a transpose, and a transposed convolution (as 2-tap
convolutions, see ``streaming._tap_weight``) needs no interleaving copy: its output
channels ``r * C_out + o`` are already sample ``j * s + r`` of channel ``o``.

The computation is EnCodec's, step by step (``SConv1d``'s padding, ``NormConv1d``'s group
norm, ``SEANetResnetBlock``, ``SLSTM``, ``SConvTranspose1d``'s trimming): its outputs equal
``model.encoder``/``model.decoder``'s within float rounding (the kernels sum in another
order), like every other batched or streamed path here.

In float32, when the compiled ``tokpack._kernels`` is there, a group norm is not computed
where torch would compute it: the convolution returns a ``_Normed`` (its raw output and the
norm), and the consumer writes the normed values where it needs them, in one pass that also
does the ELU that follows, the residual sum of two normed branches, and the next
convolution's padding (``_Normed.write``). torch runs those as four or five passes over the
activations, and its ELU alone costs ~2 ns per element here (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import functools
import importlib
import math
import weakref
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

Step = Callable[["torch.Tensor"], "torch.Tensor"]


def supported(net: torch.nn.Module) -> bool:
    """Whether every layer of a SEANet encoder or decoder is one this module runs."""
    try:
        _plan(net)
    except _Unsupported:
        return False
    return True


def run(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` for EnCodec's SEANet encoder or decoder ``net``: x [B, C, T] -> [B, C', T']
    (contiguous), computed in channels-last memory.

    Layers over long signals run one row (segment) at a time, whose activations stay in
    cache (a batch of 4 one-second 48 kHz segments was 0.136 s per segment here, one at a
    time 0.096); layers over at most ``BATCH_BELOW`` samples, and the LSTM, run on all rows
    at once: their weights are the larger part of what they read (the 512 x 256 x 16
    convolution over 8 rows: 68 ms batched, 101 ms row by row; the LSTM, sequential over
    frames, reads its weights at every step whatever the batch). With 8 rows, batching
    below 2048 samples (EnCodec 48 kHz's last two levels) made encode and decode 7-10 %
    faster than rows throughout; below 8192, no faster; below 30,000, slower.

    Each row goes through a run of row-by-row layers before the next row starts, so one
    row's large activations are alive at a time, not the batch's. Those activations (up to
    ~6 MB each, tens of MB per row) come and go layer by layer: the C heap is told to keep
    freed blocks for reuse (``memory.keep_freed_memory``), or glibc hands them back and
    every layer's output faults its pages in again (a 60 s 48 kHz encode: 620,000 page
    faults and 2.7 s of system time, against 250,000 and 1.0 s).
    """
    import torch

    from tokpack.codec.memory import keep_freed_memory

    keep_freed_memory()
    plan = _plan(net)
    values = [x[b:b + 1].unsqueeze(2).contiguous(memory_format=torch.channels_last)
              for b in range(x.shape[0])]
    i = 0
    while i < len(plan):
        if _batched(plan[i], values[0]):
            values = [plan[i](v) for v in _regroup(values, True)]
            i += 1
            continue
        rows, values, end = _regroup(values, False), [], None
        for v in rows:  # rows are of equal length: they end the run at the same step
            j = i
            while j < len(plan) and j != end and not _batched(plan[j], v):
                v = plan[j](v)
                j += 1
            end = j
            values.append(v)
        i = end
    return torch.cat([_dense(v)[:, :, 0, :] for v in values]).contiguous()


def _batched(step, value) -> bool:
    """Whether ``step`` runs on the whole batch rather than row by row (``run``)."""
    return isinstance(step, _Lstm) or value.shape[-1] <= BATCH_BELOW


#: layers whose input has at most this many samples run on the whole batch (``run``)
BATCH_BELOW = 2048


@functools.cache
def _load_kernels():
    """tokpack._kernels, or None where it was not built (no C compiler at install: torch's
    ops then do it all). Imported after torch, so that its OpenMP library is torch's own,
    already loaded (one ``libgomp.so.1`` per process): the kernels' threads are torch's
    pool, not a second pool spinning against it."""
    importlib.import_module("torch")  # first: see above

    try:
        from tokpack import _kernels
    except ImportError:
        return None
    return _kernels


def elu(x, alpha: float):
    """``F.elu(x, alpha)``, computed by ``tokpack._kernels`` where it can (a dense float32
    CPU tensor, no autograd, the kernels built), else by torch.

    The kernels' ELU is within float32 rounding of torch's (a few values in a hundred differ
    by an ulp), and the same bits on every CPU; torch's takes its expm1 from kernels compiled
    per CPU capability, whose AVX-512 one took ~6 ns per element on an AMD EPYC with
    AVX-512 (AVX2: ~0.8 ns, the kernels ~0.3 ns; docs/PERFORMANCE.md). Where a computation
    must be torch's bit for bit (a layer's only call, which is the one-pass computation),
    callers use ``F.elu``."""
    import torch
    import torch.nn.functional as F

    kernels = _load_kernels()
    if (kernels is None or x.dtype != torch.float32 or x.device.type != "cpu"
            or x.requires_grad):
        return F.elu(x, alpha)
    out = torch.empty_like(x)  # the same strides as a dense x
    memory_x, memory_out = _in_memory_order(x), _in_memory_order(out)
    if memory_x is None or memory_out is None:
        return F.elu(x, alpha)
    kernels.elu(memory_out.numpy(), memory_x.numpy(), alpha, torch.get_num_threads())
    return out


def _in_memory_order(t):
    """A C-contiguous view of dense ``t``'s memory (e.g. [B, 1, T, C] of a channels-last
    [B, C, 1, T]), or None where t is not dense."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    view = t.permute(order)
    return view if view.is_contiguous() else None


def _regroup(values: list, batched: bool) -> list:
    """Rows ([1, ...] values) joined into one batch, or a batch split into rows."""
    import torch

    if batched and len(values) > 1:
        if all(isinstance(v, _Normed) for v in values) \
                and len({v.alpha for v in values}) == 1:
            return [_Normed([r for v in values for r in v.rows], values[0].alpha)]
        return [torch.cat([_dense(v) for v in values])]
    if not batched and len(values) == 1 and values[0].shape[0] > 1:
        v = values[0]
        if isinstance(v, _Normed):
            return [_Normed([r], v.alpha) for r in v.rows]
        return [v[b:b + 1] for b in range(v.shape[0])]
    return values


class _Unsupported(Exception):
    pass


def _plan(net) -> list[Step]:
    if net not in _PLANS:
        _PLANS[net] = _steps(net.model)
    return _PLANS[net]


def _steps(sequential) -> list[Step]:
    import torch
    from encodec.modules.conv import SConv1d, SConvTranspose1d
    from encodec.modules.lstm import SLSTM
    from encodec.modules.seanet import SEANetResnetBlock

    steps: list[Step] = []
    for layer in sequential:
        if isinstance(layer, SConv1d):
            steps.append(_Conv(layer))
        elif isinstance(layer, SConvTranspose1d):
            steps.append(_ConvTranspose(layer))
        elif isinstance(layer, torch.nn.ELU):
            steps.append(_Elu(layer.alpha))
        elif isinstance(layer, SEANetResnetBlock):
            steps.append(_Residual(layer))
        elif isinstance(layer, SLSTM):
            steps.append(_Lstm(layer))
        elif isinstance(layer, torch.nn.Identity):
            continue
        else:
            raise _Unsupported(type(layer).__name__)
    return steps


class _Norm:
    """NormConv1d's (or NormConvTranspose1d's) group norm: torch's, or, when it can, a
    _Normed computed by the kernels."""

    def __init__(self, norm) -> None:
        import torch

        if not isinstance(norm, torch.nn.GroupNorm):
            raise _Unsupported(type(norm).__name__)
        self.groups, self.eps = norm.num_groups, norm.eps
        self.weight = None if norm.weight is None else norm.weight.detach()
        self.bias = None if norm.bias is None else norm.bias.detach()
        # the kernels do one group with weight and bias: EnCodec's time_group_norm
        self.kernels = _load_kernels()
        self.fusable = (self.kernels is not None and self.groups == 1
                        and self.weight is not None and self.bias is not None)
        if self.fusable:
            self.weight64 = self.weight.double().cpu().numpy()
            self.bias64 = self.bias.double().cpu().numpy()

    def __call__(self, y, trim: tuple[int, int] = (0, 0)):
        """The norm of each row of y [B, C, 1, T] (channels-last), then ``trim`` samples
        cut from its ends: a _Normed when the kernels can compute it, else a tensor."""
        import torch
        import torch.nn.functional as F

        if self.fusable and y.dtype == torch.float32 and y.device.type == "cpu":
            y = _cl(y)
            return _Normed([[_Term(y[b:b + 1], self, trim)] for b in range(y.shape[0])])
        y = F.group_norm(_cl(y), self.groups, self.weight, self.bias, self.eps)
        left, right = trim
        return y[..., left:y.shape[-1] - right]


def _norm(norm) -> _Norm | None:
    """NormConv1d's norm, None for Identity."""
    import torch

    return None if isinstance(norm, torch.nn.Identity) else _Norm(norm)


def _cl(t):
    import torch

    return t.contiguous(memory_format=torch.channels_last)


class _Term:
    """One normed convolution output: y [1, C, 1, T] channels-last, its group norm (over
    all of y), and the samples trimmed from its ends after the norm; the norm's per-channel
    scale and shift are computed once (a residual block's input is written twice: raw for
    the shortcut, through the ELU for the block)."""

    def __init__(self, y, norm: _Norm, trim: tuple[int, int]) -> None:
        self.y, self.norm, self.trim = y, norm, trim
        self.shape = (*y.shape[:3], y.shape[3] - trim[0] - trim[1])
        self._coefficients = None

    def coefficients(self, threads: int) -> tuple:
        """(x, scale, shift) for _kernels.apply: GN(y) = y * scale + shift per channel,
        x the rows of y that remain after the trim."""
        import numpy as np

        if self._coefficients is None:
            norm = self.norm
            y = _flat(self.y)
            mean, var = norm.kernels.moments(y, threads)
            scale = norm.weight64 / math.sqrt(var + norm.eps)
            shift = norm.bias64 - mean * scale
            left, right = self.trim
            self._coefficients = (y[left:y.shape[0] - right], scale.astype(np.float32),
                                  shift.astype(np.float32))
        return self._coefficients


class _Normed:
    """A batch whose every row is the sum of one or two normed convolution outputs
    (``rows[b]``: its terms), through an ELU or not, not yet written: ``write`` computes
    each row in one pass (``_kernels.apply``)."""

    def __init__(self, rows: list[list[_Term]], alpha: float | None = None) -> None:
        self.rows = rows
        self.alpha = alpha  # the ELU's, None for none
        self.shape = (len(rows), *rows[0][0].shape[1:])

    def write(self, left: int = 0, right: int = 0, mode: str = "constant"):
        """The values as a [B, C, 1, left + T + right] channels-last tensor, padded as
        ``_pad`` pads (reflect or zeros)."""
        import torch

        b, c, _, n = self.shape
        if mode == "reflect" and n <= max(left, right):
            return _pad(self.write(), left, right, mode)  # pad1d's short-input rule
        out = torch.empty((b, c, 1, left + n + right), dtype=torch.float32,
                          memory_format=torch.channels_last)
        threads = torch.get_num_threads()
        elu, alpha = self.alpha is not None, 1.0 if self.alpha is None else self.alpha
        apply = self.rows[0][0].norm.kernels.apply
        for i, terms in enumerate(self.rows):
            apply(_flat(out[i:i + 1])[left:left + n],
                  tuple(t.coefficients(threads) for t in terms), c, elu, alpha, threads)
        _pad_edges(out, left, right, mode)
        return out


def _flat(t):
    """The [T, C] numpy view of a [1, C, 1, T] channels-last tensor's memory."""
    return t.permute(0, 3, 2, 1).view(t.shape[3], t.shape[1]).numpy()


def _dense(x, left: int = 0, right: int = 0, mode: str = "constant"):
    """x (a tensor or a _Normed) as a tensor, padded as ``_pad`` pads."""
    if isinstance(x, _Normed):
        return x.write(left, right, mode)
    return _pad(x, left, right, mode) if left or right else x


class _Elu:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def __call__(self, x):
        if isinstance(x, _Normed) and x.alpha is None:
            return _Normed(x.rows, self.alpha)
        return elu(_dense(x), self.alpha)


class _Conv:
    """SConv1d: EnCodec's padding (causal or split, plus the extra right padding that
    completes the last frame), the convolution, NormConv1d's norm."""

    def __init__(self, layer) -> None:
        from tokpack.codecs.encodec.streaming import _weight

        conv = layer.conv.conv
        if conv.groups != 1 or conv.padding[0] != 0 or layer.pad_mode not in ("reflect", "constant"):
            raise _Unsupported("conv")
        self.k, self.s, self.d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        self.causal = layer.causal
        self.mode = layer.pad_mode
        self.weight = _cl(_weight(conv).unsqueeze(2))
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.norm = _norm(layer.conv.norm)

    def __call__(self, x):
        import torch.nn.functional as F
        from encodec.modules.conv import get_extra_padding_for_conv1d

        k, s, d = self.k, self.s, self.d
        total = (k - 1) * d - (s - 1)
        extra = get_extra_padding_for_conv1d(x, k, s, total)  # (it reads x.shape[-1] only)
        if self.causal:
            left, right = total, extra
        else:
            right = total // 2
            left, right = total - right, right + extra
        y = F.conv2d(_dense(x, left, right, self.mode), self.weight, self.bias,
                     stride=(1, s), dilation=(1, d))
        return y if self.norm is None else self.norm(y)


def _pad(x, left: int, right: int, mode: str):
    """encodec.modules.conv.pad1d on [B, C, 1, T] channels-last."""
    import torch

    n = x.shape[-1]
    if mode == "reflect" and n <= max(left, right):  # pad1d's short-input rule
        from encodec.modules.conv import pad1d

        return _cl(pad1d(x[:, :, 0, :].contiguous(), (left, right), mode).unsqueeze(2))
    out = torch.empty((*x.shape[:3], n + left + right), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    out[..., left:left + n] = x
    _pad_edges(out, left, right, mode)
    return out


def _pad_edges(out, left: int, right: int, mode: str) -> None:
    """Fills the padding of ``out`` [..., left + n + right] around the n values it holds."""
    n = out.shape[-1] - left - right
    if mode == "reflect":
        if left:
            out[..., :left] = out[..., left + 1:2 * left + 1].flip(-1)
        if right:
            out[..., left + n:] = out[..., left + n - 1 - right:left + n - 1].flip(-1)
    else:
        out[..., :left] = 0
        out[..., left + n:] = 0


class _ConvTranspose:
    """SConvTranspose1d (kernel 2s, stride s) as a 2-tap convolution over input frames,
    its output channels ordered r * C_out + o so that the channels-last result is already
    the interleaved signal; the norm, then EnCodec's trimming."""

    def __init__(self, layer) -> None:
        from tokpack.codecs.encodec.streaming import _tap_weight

        ct = layer.convtr.convtr
        s, cout = ct.stride[0], ct.out_channels
        if (ct.kernel_size[0] != 2 * s or ct.padding[0] != 0 or ct.groups != 1
                or ct.dilation[0] != 1 or ct.output_padding[0] != 0):
            raise _Unsupported("transposed conv")
        taps = _tap_weight(ct)  # [out * s, in, 2], row o * s + r
        self.weight = _cl(taps.view(cout, s, -1, 2).transpose(0, 1).reshape(s * cout, -1, 1, 2))
        # output channel r * C_out + o is sample j * s + r of channel o: bias[o] for each r
        self.bias = None if ct.bias is None else ct.bias.detach().repeat(s)
        self.s, self.cout = s, cout
        total = s  # kernel - stride
        right = math.ceil(total * layer.trim_right_ratio) if layer.causal else total // 2
        self.trim = (total - right, right)
        self.norm = _norm(layer.convtr.norm)

    def __call__(self, x):
        import torch.nn.functional as F

        n = x.shape[-1]
        y = F.conv2d(_dense(x, 1, 1, "constant"), self.weight, self.bias)  # [B, s*out, 1, n+1]
        b = y.shape[0]
        # channels-last memory [B, n+1, s, out] is [B, (n+1)*s, out]: the signal itself
        y = y.permute(0, 2, 3, 1).reshape(b, 1, (n + 1) * self.s, self.cout).permute(0, 3, 1, 2)
        if self.norm is not None:  # NormConvTranspose1d's, on the untrimmed output
            return self.norm(y, self.trim)
        left, right = self.trim
        return y[..., left:y.shape[-1] - right]


class _Residual:
    """SEANetResnetBlock: shortcut(x) + block(x)."""

    def __init__(self, layer) -> None:
        self.block = _steps(layer.block)
        self.shortcut = _steps([layer.shortcut])

    def __call__(self, x):
        y = x
        for step in self.block:
            y = step(y)
        short = x
        for step in self.shortcut:
            short = step(short)
        if isinstance(short, _Normed) and isinstance(y, _Normed) \
                and short.alpha is None and y.alpha is None:
            # added as the kernel writes them
            return _Normed([a + b for a, b in zip(short.rows, y.rows)])
        return _dense(short) + _dense(y)


class _Lstm:
    """SLSTM: the LSTM over [T, B, C] (for B = 1 the channels-last memory itself), plus
    the skip connection."""

    def __init__(self, layer) -> None:
        self.lstm = layer.lstm
        self.skip = layer.skip

    def __call__(self, x):
        seq = _dense(x)[:, :, 0, :].permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(seq.contiguous())
        if self.skip:
            y = y + seq
        return _cl(y.permute(1, 2, 0).unsqueeze(2))
