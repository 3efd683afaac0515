"""Kyutai's Mimi behind the codec interface, through transformers' ``MimiModel``.

Mimi is causal, so it streams (:mod:`.model`: ``StreamEncoder``/``StreamDecoder``; the
model module imports torch and transformers, so it is imported only when a model runs). The
official weights are ``kyutai/mimi`` on the Hugging Face Hub (the HF cache, else
downloaded; ``--weights DIR|FILE``); ``test_mimi`` is the same architecture with
seeded weights built here (:func:`.model.build_test_model`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokpack.codec.registry import ModelSpec
from tokpack.codecs.base import LoadedModel


class MimiLoaded(LoadedModel):
    """A Mimi model: ``model`` is a ``transformers.MimiModel`` in eval mode."""

    def stream_encoder(self, n_codebooks: int, *, live: bool = False):
        from tokpack.codecs.mimi.model import PIECE_FRAMES, StreamEncoder

        return StreamEncoder(self.model, n_codebooks, 1 if live else PIECE_FRAMES)

    def stream_decoder(self, *, live: bool = False):
        from tokpack.codecs.mimi.model import PIECE_FRAMES, StreamDecoder

        return StreamDecoder(self.model, 1 if live else PIECE_FRAMES)

    def codebooks(self, n_codebooks: int) -> list[np.ndarray]:
        """The semantic codebook, then the acoustic ones (each in its quantizer's space)."""
        quantizer = self.model.quantizer
        layers = [*quantizer.semantic_residual_vector_quantizer.layers,
                  *quantizer.acoustic_residual_vector_quantizer.layers][:n_codebooks]
        return [layer.codebook.embed.detach().cpu().double().numpy() for layer in layers]


def cached_test_weights(spec: ModelSpec) -> Path:
    """The safetensors file of ``test_mimi``, built and cached on first use."""
    from tokpack.codec.weights import cached_build
    from tokpack.codecs.hf import save_state
    from tokpack.codecs.mimi.model import build_test_model

    return cached_build(spec.name, lambda: build_test_model().state_dict(),
                        suffix=".safetensors", serialise=save_state)


def load(spec: ModelSpec, path: Path, device: str) -> MimiLoaded:
    """The Mimi model with the weights file ``path`` (checked key by key, hashed)."""
    from transformers import MimiModel

    from tokpack.codecs.hf import load_checked
    from tokpack.codecs.mimi.model import official_config

    model, digest = load_checked(MimiModel, official_config(), path, spec)
    return MimiLoaded(spec=spec, model=model.to(device), weights_sha256=digest,
                      weights_path=path, device=device)
