"""The codec interface: what the engine, batch, bench and train-prior may ask of a model.

Shaped after audiocraft's ``CompressionModel``: the static facts (sample rate, channels,
frame rate, codebook size, codebooks per bandwidth, segmenting) are the registry's
:class:`~tokpack.codec.registry.ModelSpec`, known before any weights are loaded; a
:class:`LoadedModel` adds the weights' identity and the calls that run the network.
Every family streams: ``stream_encoder`` and ``stream_decoder`` take pieces of any size
and hold a bounded amount of state, so memory does not grow with the signal's length.
A causal family (``spec.causal``) also streams *live*: with ``live=True`` every piece is
computed as soon as it arrives (small calls, nothing held back for speed), so a code
frame comes out once its audio is in, and a frame's audio once its codes are in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tokpack.codec.registry import ModelSpec, check_live

if TYPE_CHECKING:  # (numpy too: `tokpack models` imports this module and needs neither)
    import numpy as np
    import torch


class StreamEncoder(Protocol):
    """Audio at the model rate -> codes, piece by piece.

    ``feed(x)``: float32 tensor [channels, n], any n >= 0. An unsegmented model returns
    the codes now final, uint16-compatible ints [codebooks, frames]; a segmented one
    (EnCodec 48 kHz) a list of segments (``.codes``, ``.scale``). ``finish()`` returns
    the rest: over all calls, ``ceil(samples / hop_length)`` frames (a segmented model:
    that many per segment)."""

    def feed(self, x: torch.Tensor) -> Any: ...

    def finish(self) -> Any: ...


class StreamDecoder(Protocol):
    """Codes -> audio at the model rate, piece by piece.

    ``feed(codes)``: ints [codebooks, frames] (a segmented model: a list of (codes,
    scale) segments); returns float32 [channels, n], the samples now final. ``finish()``
    the rest: over all calls, ``frames * hop_length`` samples (a segmented model: its
    overlap-added length), which the engine trims to the source's length."""

    def feed(self, codes: Any) -> torch.Tensor: ...

    def finish(self) -> torch.Tensor: ...


@dataclass
class LoadedModel(ABC):
    """A ready model: spec, torch module (eval mode), the weights' identity.

    ``weights_sha256`` (:func:`tokpack.codec.weights.weights_sha256` of the state dict)
    is what containers record, so decoding can tell other weights apart. Families
    subclass it and implement the stream factories and :meth:`codebooks`."""

    spec: ModelSpec
    model: Any  # the family's torch module
    weights_sha256: bytes
    weights_path: Path
    device: str = "cpu"

    @property
    def weights_hex(self) -> str:
        return self.weights_sha256.hex()

    def _check_live(self, live: bool) -> None:
        if live:
            check_live(self.spec)

    @abstractmethod
    def stream_encoder(self, n_codebooks: int, *, live: bool = False) -> StreamEncoder:
        """A fresh encoder stream producing the first ``n_codebooks`` codebooks;
        ``live`` (causal models only): each frame as soon as its audio is in."""

    @abstractmethod
    def stream_decoder(self, *, live: bool = False) -> StreamDecoder:
        """A fresh decoder stream (on ``device``); ``live`` (causal models only): each
        frame's audio as soon as its codes are in."""

    def encode_batch(self, signals: list[torch.Tensor], n_codebooks: int) -> list:
        """Encode several signals, float32 [channels, n] at the model rate (any n >= 0,
        each its own length), on ``device``.

        Returns, per signal in order, exactly what a fresh ``stream_encoder(n_codebooks)``
        fed that signal and finished returns, concatenated: an unsegmented model's codes
        [codebooks, frames], a segmented model's list of segments. A family may run the
        signals together (fewer, larger calls: faster on a GPU) where that keeps this
        promise; this default encodes them one after another, which keeps it by
        definition."""
        import numpy as np

        out = []
        for x in signals:
            enc = self.stream_encoder(n_codebooks)
            head, tail = enc.feed(x), enc.finish()
            out.append(head + tail if self.spec.segmented else np.concatenate([head, tail], axis=1))
        return out

    @abstractmethod
    def codebooks(self, n_codebooks: int) -> list[np.ndarray]:
        """The first ``n_codebooks`` codebooks as float arrays [codebook_size, dim], the
        vectors codes stand for (train-prior ranks codes by their distance)."""
