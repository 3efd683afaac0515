"""Descript's DAC behind the codec interface, through transformers' ``DacModel``.

DAC is not causal, so it runs in windows of frames with context on both sides
(:mod:`.model`: ``WindowedEncoder``/``WindowedDecoder``; the model module imports torch
and transformers, so it is imported only when a model runs). The official weights are
``descript/dac_44khz`` (``_24khz``, ``_16khz``) on the Hugging Face Hub (the HF cache,
else downloaded; ``--weights DIR|FILE``); ``test_dac_44khz`` is the 44.1 kHz
architecture with seeded weights built here (:func:`.model.build_test_model`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokpack.codec.registry import ModelSpec
from tokpack.codecs.base import LoadedModel


class DacLoaded(LoadedModel):
    """A DAC model: ``model`` is a ``transformers.DacModel`` in eval mode."""

    def stream_encoder(self, n_codebooks: int, *, live: bool = False):
        from tokpack.codecs.dac.model import WindowedEncoder

        self._check_live(live)
        return WindowedEncoder(self.model, n_codebooks)

    def stream_decoder(self, *, live: bool = False):
        from tokpack.codecs.dac.model import WindowedDecoder

        self._check_live(live)
        return WindowedDecoder(self.model)

    def codebooks(self, n_codebooks: int) -> list[np.ndarray]:
        """Each codebook L2-normalised: DAC looks codes up by direction (cosine)."""
        out = []
        for quantizer in self.model.quantizer.quantizers[:n_codebooks]:
            book = quantizer.codebook.weight.detach().cpu().double().numpy()
            out.append(book / np.maximum(np.linalg.norm(book, axis=1, keepdims=True), 1e-12))
        return out


def cached_test_weights(spec: ModelSpec) -> Path:
    """The safetensors file of test model ``spec``, built and cached on first use."""
    from tokpack.codec.weights import cached_build
    from tokpack.codecs.dac.model import build_test_model
    from tokpack.codecs.hf import save_state

    return cached_build(spec.name, lambda: build_test_model(_official(spec)).state_dict(),
                        suffix=".safetensors", serialise=save_state)


def _official(spec: ModelSpec) -> str:
    """The official model whose architecture ``spec`` has (test_dac_44khz: dac_44khz)."""
    return spec.name.removeprefix("test_")


def load(spec: ModelSpec, path: Path, device: str) -> DacLoaded:
    """The DAC model with the weights file ``path`` (checked key by key, hashed)."""
    from transformers import DacModel

    from tokpack.codecs.dac.model import official_config
    from tokpack.codecs.hf import load_checked

    model, digest = load_checked(DacModel, official_config(_official(spec)), path, spec)
    return DacLoaded(spec=spec, model=model.to(device), weights_sha256=digest,
                     weights_path=path, device=device)
