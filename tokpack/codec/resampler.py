"""The pinned resampler (container resampler id 1), chunk by chunk (imports torch).

``torchaudio.functional.resample(x, orig, new, resampling_method="sinc_interp_hann",
lowpass_filter_width=6, rolloff=0.99)`` is a polyphase FIR filter: with ``o = orig/g``,
``n = new/g`` (``g`` the gcd), it zero-pads the signal by ``width`` on the left and
``width + o`` on the right, convolves it with ``n`` filters of ``2*width + o`` taps at
stride ``o``, interleaves the ``n`` outputs of each step and keeps ``ceil(L*n/o)``
samples. :class:`SincResampler` does the same convolution on a signal that arrives in
pieces: it keeps the input that the next output step still needs, so every output
sample comes from exactly the same taps and input samples as in the one-call version.

Bit-exactness with torchaudio also needs the same convolution *algorithm*: torch sends a
float32 CPU convolution to oneDNN only when the batch is larger than one or the input
has more than 20480 elements (:data:`~tokpack.codecs.encodec.streaming.MKLDNN_MIN_NUMEL`), and
oneDNN and torch's fallback round differently. So the resampler holds input back until
each call is that large, and keeps that much for the last call: a signal too short for
that is resampled in one call, exactly as torchaudio does. Longer signals run in calls of
a fixed size: with one input channel oneDNN has given the same bits as torchaudio's one
call on every kernel set measured (docs/PERFORMANCE.md, "Determinism"), but nothing
guarantees it, and the tests bound the difference instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tokpack.codec.audio import resampled_length

if TYPE_CHECKING:
    import torch

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
#: torch's oneDNN threshold for one-signal convolutions (input elements; see module doc)
_MIN_CALL = 20480 + 1


def sinc_kernel(orig: int, new: int, dtype=None) -> tuple[torch.Tensor, int]:
    """torchaudio's sinc_interp_hann kernel [new/g, 1, 2*width + orig/g] and its width.

    A transcription of ``torchaudio.functional.functional._get_sinc_resample_kernel``
    (torchaudio 2.x) for the pinned parameters, so the container's resampler does not
    hang on a private function; tests compare the two.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base_freq = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base_freq
    t = t.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    scale = base_freq / orig
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    return kernels, width


_CALL_VALUES = 1 << 22  # output values one convolution call may make (16 MiB of float32)


class SincResampler:
    """Resample [channels, time] float32 pieces from ``orig`` to ``new`` Hz.

    ``process(x)`` returns the output samples that ``x`` completes (maybe none);
    ``finish()`` the rest, ``ceil(L * new / orig)`` samples in all. The convolution
    runs in calls of ``block`` input samples and a last one, so the output does not
    depend on how the input was cut into pieces. It equals
    ``torchaudio.functional.resample`` of the whole input with the pinned parameters
    within float rounding (bit for bit where oneDNN's kernels give every output sample
    the same sum whatever the call's length: so far on every CPU measured); a signal
    short enough for one call is torchaudio's computation itself. ``orig == new``
    passes samples through.
    """

    def __init__(self, orig: int, new: int, channels: int, *, block: int = 1 << 16,
                 live: bool = False) -> None:
        """``live``: every output sample as soon as its input is in (calls of any size,
        which round like torchaudio's within float rounding; algorithmic delay: the
        filter's ``width`` input samples, 0.25 ms for 24 <-> 48 kHz)."""
        import torch

        if orig <= 0 or new <= 0:
            raise ValueError(f"sample rates must be positive, got {orig} and {new}")
        self.orig_rate, self.new_rate, self.channels = orig, new, channels
        self._identity = orig == new
        self._in = 0
        self._out = 0
        self._done = False
        if self._identity:
            return
        g = math.gcd(orig, new)
        self._o, self._n = orig // g, new // g
        self._kernel, self._width = sinc_kernel(orig, new)
        self._taps = self._kernel.shape[-1]
        # one-signal calls must stay on oneDNN's side of torch's size rule (module doc)
        self._reserve = _MIN_CALL if channels == 1 and not live else 0
        self._live = live
        # fewer input samples a call where many channels or a high ratio would make its
        # output large (1024 channels to 768 kHz): a call's output stays within 16 MiB
        per_sample = channels * -(-self._n // self._o)  # output values one input sample makes
        self._block = max(min(block, _CALL_VALUES // per_sample), self._taps + self._o)
        self._steps = (self._block - self._taps) // self._o + 1  # output steps per call
        self._pending: list[torch.Tensor] = [torch.zeros(channels, self._width)]
        self._pending_len = self._width

    @property
    def samples_in(self) -> int:
        return self._in

    def process(self, x: torch.Tensor) -> torch.Tensor:
        """Feed [channels, n] samples; returns the output samples now complete."""
        if self._done:
            raise ValueError("the resampler is finished")
        self._in += x.shape[-1]
        if self._identity:
            self._out += x.shape[-1]
            return x
        if x.shape[-1]:
            self._pending.append(x)
            self._pending_len += x.shape[-1]
        # calls of one fixed size, whatever the pieces: the calls, and so their rounding,
        # depend on the signal's length alone
        out = []
        if self._live and self._pending_len >= self._taps:
            out.append(self._run((self._pending_len - self._taps) // self._o + 1, final=False))
        while self._pending_len - self._reserve >= self._block:
            out.append(self._run(self._steps, final=False))
        if not out:
            return self._empty()
        import torch

        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)

    def finish(self) -> torch.Tensor:
        """The remaining output: ``ceil(L * new / orig)`` samples in all."""
        if self._done:
            raise ValueError("the resampler is finished")
        self._done = True
        if self._identity:
            return self._empty()
        import torch

        want = resampled_length(self._in, self.orig_rate, self.new_rate)
        if self._in == 0:
            return self._empty()
        self._pending.append(torch.zeros(self.channels, self._width + self._o))
        self._pending_len += self._width + self._o
        steps = (self._pending_len - self._taps) // self._o + 1
        y = self._run(steps, final=True)
        if self._out > want:  # the last step overshoots the wanted length
            y = y[:, : y.shape[-1] - (self._out - want)]
            self._out = want
        return y

    def _run(self, steps: int, final: bool) -> torch.Tensor:
        import torch

        buf = torch.cat(self._pending, dim=-1) if len(self._pending) > 1 else self._pending[0]
        # the last call convolves all it has, as torchaudio does (same size, same algorithm)
        used = buf.shape[-1] if final else (steps - 1) * self._o + self._taps
        y = torch.nn.functional.conv1d(buf[:, None, :used], self._kernel, stride=self._o)
        y = y.transpose(1, 2).reshape(self.channels, -1)
        keep = buf[:, steps * self._o:]
        self._pending = [] if final else [keep.clone()]
        self._pending_len = 0 if final else keep.shape[-1]
        self._out += y.shape[-1]
        return y

    def _empty(self) -> torch.Tensor:
        import torch

        return torch.zeros(self.channels, 0)
