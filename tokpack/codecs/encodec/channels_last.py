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
"""

from __future__ import annotations

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

    The convolutions run one row (segment) at a time, whose activations stay in cache
    (a batch of 4 one-second 48 kHz segments was 0.136 s per segment here, one at a time
    0.096), and the LSTM on all rows at once: it is sequential over frames and bound by
    reading its weights at every step, whatever the batch (24 ms per segment alone).
    """
    import torch

    rows = [x[b:b + 1].unsqueeze(2).contiguous(memory_format=torch.channels_last)
            for b in range(x.shape[0])]
    for step in _plan(net):
        if isinstance(step, _Lstm) and len(rows) > 1:
            y = step(torch.cat(rows))
            rows = [y[b:b + 1] for b in range(y.shape[0])]
        else:
            rows = [step(row) for row in rows]
    return torch.cat([row[:, :, 0, :] for row in rows]).contiguous()


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


def _group_norm(norm) -> tuple | None:
    """(groups, weight, bias, eps) of NormConv1d's norm, None for Identity."""
    import torch

    if isinstance(norm, torch.nn.Identity):
        return None
    if isinstance(norm, torch.nn.GroupNorm):
        return (norm.num_groups, None if norm.weight is None else norm.weight.detach(),
                None if norm.bias is None else norm.bias.detach(), norm.eps)
    raise _Unsupported(type(norm).__name__)


def _cl(t):
    import torch

    return t.contiguous(memory_format=torch.channels_last)


class _Elu:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def __call__(self, x):
        import torch.nn.functional as F

        return F.elu(x, self.alpha)


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
        self.norm = _group_norm(layer.conv.norm)

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
        if left or right:
            x = _pad(x, left, right, self.mode)
        return _normed(F.conv2d(x, self.weight, self.bias, stride=(1, s), dilation=(1, d)),
                       self.norm)


def _normed(y, norm: tuple | None):
    """NormConv1d's (or NormConvTranspose1d's) norm of y, if it has one."""
    import torch.nn.functional as F

    if norm is None:
        return y
    groups, weight, bias, eps = norm
    return F.group_norm(_cl(y), groups, weight, bias, eps)


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
    if mode == "reflect":
        if left:
            out[..., :left] = x[..., 1:left + 1].flip(-1)
        if right:
            out[..., left + n:] = x[..., n - 1 - right:n - 1].flip(-1)
    else:
        out[..., :left] = 0
        out[..., left + n:] = 0
    return out


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
        self.bias = None if ct.bias is None else ct.bias.detach().view(1, cout, 1, 1)
        self.s, self.cout = s, cout
        total = s  # kernel - stride
        right = math.ceil(total * layer.trim_right_ratio) if layer.causal else total // 2
        self.trim = (total - right, right)
        self.norm = _group_norm(layer.convtr.norm)

    def __call__(self, x):
        import torch.nn.functional as F

        n = x.shape[-1]
        y = F.conv2d(_pad(x, 1, 1, "constant"), self.weight)  # [B, s*out, 1, n+1]
        b = y.shape[0]
        # channels-last memory [B, n+1, s, out] is [B, (n+1)*s, out]: the signal itself
        y = y.permute(0, 2, 3, 1).reshape(b, 1, (n + 1) * self.s, self.cout).permute(0, 3, 1, 2)
        if self.bias is not None:
            y = y + self.bias
        y = _normed(y, self.norm)  # NormConvTranspose1d's, on the untrimmed output
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
        return short + y


class _Lstm:
    """SLSTM: the LSTM over [T, B, C] (for B = 1 the channels-last memory itself), plus
    the skip connection."""

    def __init__(self, layer) -> None:
        self.lstm = layer.lstm
        self.skip = layer.skip

    def __call__(self, x):
        seq = x[:, :, 0, :].permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(seq.contiguous())
        if self.skip:
            y = y + seq
        return _cl(y.permute(1, 2, 0).unsqueeze(2))
