"""Model-rate audio <-> token frames, with EnCodec's own framing (imports torch).

We call the model's encoder, quantizer and decoder ourselves instead of
``encodec.compress``, which rounds frame counts wrongly, and keep every length in the
container. The framing, measured on encodec 0.1.1:

* unsegmented (24 kHz): frames = ceil(L / hop); the decoder returns frames * hop
  samples, trimmed to L.
* segmented (48 kHz): segments start at ``range(0, L, stride)`` and hold up to
  ``segment_length`` samples; each has ceil(len / hop) frames and its own scale (RMS
  of the mono mix + 1e-8; the encoder sees the segment divided by it). Decoded
  segments are joined by EnCodec's linear overlap-add, then trimmed to L.

Each stream is encoded separately with batch size 1, exactly as ``model.encode`` does
for one signal, so tokpack's codes equal encodec's on the same thread count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from encodec import EncodecModel


@dataclass
class TokenBlock:
    """Tokens for consecutive frames of every stream: one segment when segmented."""

    tokens: np.ndarray  # uint16 [n_streams, n_codebooks, n_frames]
    scales: np.ndarray | None  # float32 [n_streams] for a segment, else None


def segment_bounds(length: int, segment_length: int, stride: int) -> list[tuple[int, int]]:
    """(offset, length) of each segment of a length-``length`` signal, as encodec cuts it."""
    return [(off, min(segment_length, length - off)) for off in range(0, length, stride)]


def frames_for(samples: int, hop: int) -> int:
    return -(-samples // hop)


def _codes(model: EncodecModel, x: torch.Tensor, n_q: int) -> torch.Tensor:
    emb = model.encoder(x)
    return model.quantizer.vq.encode(emb, n_q=n_q)[:, 0]  # [K, T] for batch size 1


def encode_unsegmented(model: EncodecModel, x: torch.Tensor, n_q: int) -> np.ndarray:
    """One signal [C, L] (L > 0) -> uint16 codes [K, ceil(L/hop)]."""
    return _codes(model, x[None], n_q).cpu().numpy().astype(np.uint16)


def encode_segment(model: EncodecModel, x: torch.Tensor, n_q: int) -> tuple[np.ndarray, float]:
    """One segment [C, n] -> (uint16 codes [K, ceil(n/hop)], scale), as _encode_frame does."""
    x = x[None]
    mono = x.mean(dim=1, keepdim=True)
    volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
    scale = 1e-8 + volume
    codes = _codes(model, x / scale, n_q)
    return codes.cpu().numpy().astype(np.uint16), float(scale.reshape(()).item())


def iter_encode(model: EncodecModel, streams: torch.Tensor, n_q: int, *,
                segment_length: int = 0, segment_stride: int = 0) -> Iterator[TokenBlock]:
    """Token blocks for ``streams`` [S, C, L] at the model rate; nothing for L == 0."""
    length = streams.shape[-1]
    if length == 0:
        return
    if not segment_length:
        yield TokenBlock(np.stack([encode_unsegmented(model, s, n_q) for s in streams]), None)
        return
    for offset, n in segment_bounds(length, segment_length, segment_stride):
        coded = [encode_segment(model, s[:, offset:offset + n], n_q) for s in streams]
        yield TokenBlock(np.stack([c for c, _ in coded]),
                         np.array([sc for _, sc in coded], dtype=np.float32))


def decode_frames(model: EncodecModel, codes: np.ndarray, scale: float | None = None,
                  device: str = "cpu") -> torch.Tensor:
    """uint16 codes [K, T] of one stream -> audio [C, T*hop] (times ``scale`` if given)."""
    import torch

    c = torch.from_numpy(codes.astype(np.int64)).to(device)[:, None, :]  # [K, B=1, T]
    out = model.decoder(model.quantizer.vq.decode(c))[0]
    if scale is not None:
        out = out * torch.tensor(scale, dtype=out.dtype, device=out.device)
    return out


class OverlapAdd:
    """EnCodec's linear overlap-add (encodec.utils._linear_overlap_add), incrementally.

    Frames are added in order at offsets 0, stride, 2*stride...; each add returns the
    samples that no later frame can touch. The triangle weights come from the first
    frame's length, and positions are summed in the same order, so the result is
    bit-identical to encodec's batch version.
    """

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self._weight = None
        self._out = None  # pending weighted sum, starts at self._start
        self._wsum = None
        self._start = 0
        self._next = 0  # offset of the next frame

    def add(self, frame: torch.Tensor) -> torch.Tensor:
        import torch

        n = frame.shape[-1]
        if self._weight is None:
            t = torch.linspace(0, 1, n + 2, device=frame.device, dtype=frame.dtype)[1:-1]
            self._weight = 0.5 - (t - 0.5).abs()
            self._out = frame.new_zeros(*frame.shape[:-1], 0)
            self._wsum = frame.new_zeros(0)
        rel = self._next - self._start
        need = rel + n - self._out.shape[-1]
        if need > 0:
            self._out = torch.nn.functional.pad(self._out, (0, need))
            self._wsum = torch.nn.functional.pad(self._wsum, (0, need))
        w = self._weight[:n]
        self._out[..., rel:rel + n] += w * frame
        self._wsum[rel:rel + n] += w
        self._next += self.stride
        return self._emit(min(self._next - self._start, self._out.shape[-1]))

    def finish(self) -> torch.Tensor | None:
        if self._out is None:
            return None
        return self._emit(self._out.shape[-1])

    def _emit(self, n: int) -> torch.Tensor:
        done = self._out[..., :n] / self._wsum[:n]
        self._out = self._out[..., n:]
        self._wsum = self._wsum[n:]
        self._start += n
        return done


def iter_decode_segmented(model: EncodecModel, segments: Iterable[tuple[np.ndarray, np.ndarray]],
                          stride: int, device: str = "cpu") -> Iterator[np.ndarray]:
    """(codes [S, K, n], scales [S]) per segment -> float32 audio pieces [S, C, m].

    Each stream has its own overlap-add; the pieces, concatenated, are the decoded signal
    (before trimming to the container's model_samples).
    """
    adders: list[OverlapAdd] | None = None
    for codes, scales in segments:
        if adders is None:
            adders = [OverlapAdd(stride) for _ in range(codes.shape[0])]
        parts = [adders[s].add(decode_frames(model, codes[s], float(scales[s]), device))
                 for s in range(codes.shape[0])]
        yield np.stack([p.cpu().numpy() for p in parts])
    if adders:
        tails = [a.finish() for a in adders]
        yield np.stack([t.cpu().numpy() for t in tails])
