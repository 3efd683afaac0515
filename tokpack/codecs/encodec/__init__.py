"""Meta's EnCodec behind the codec interface (imports torch and encodec when loaded).

The network is the ``encodec`` package's; tokpack streams it itself (:mod:`.streaming`:
the causal 24 kHz model layer by layer, the 48 kHz model in batches of 1 s segments),
and keeps EnCodec's own file format (:mod:`.ecdc`) and its entropy-coding LM (:mod:`.lm`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokpack.codec.registry import ModelSpec
from tokpack.codecs.base import LoadedModel


class EncodecLoaded(LoadedModel):
    """An EnCodec model: ``model`` is an ``encodec.EncodecModel`` with folded weights."""

    def stream_encoder(self, n_codebooks: int, *, live: bool = False):
        from tokpack.codecs.encodec.streaming import CausalEncoder, SegmentEncoder

        self._check_live(live)
        spec = self.spec
        if spec.segmented:
            return SegmentEncoder(self.model, n_codebooks, spec.segment_length, spec.segment_stride)
        return CausalEncoder(self.model, n_codebooks, live=live)

    def stream_decoder(self, *, live: bool = False):
        from tokpack.codecs.encodec.streaming import CausalDecoder, SegmentDecoder

        self._check_live(live)
        if self.spec.segmented:
            return SegmentDecoder(self.model, self.spec.segment_stride)
        return CausalDecoder(self.model, device=self.device, live=live)

    def encode_batch(self, signals, n_codebooks: int) -> list:
        """The causal model: the signals in one batched net (streaming.encode_batch). The
        segmented model: one after another, as its segments are already encoded in
        batches within a signal, and mixing signals' segments would change those
        batches' sizes, which the promise does not allow for."""
        if self.spec.segmented:
            return super().encode_batch(signals, n_codebooks)
        from tokpack.codecs.encodec.streaming import encode_batch

        return encode_batch(self.model, signals, n_codebooks)

    def codebooks(self, n_codebooks: int) -> list[np.ndarray]:
        return [layer._codebook.embed.detach().cpu().double().numpy()
                for layer in self.model.quantizer.vq.layers[:n_codebooks]]


def cached_test_weights(spec: ModelSpec) -> Path:
    """The state dict file of test model ``spec``, built and cached on first use."""
    from tokpack.codec.testmodels import build_test_state_dict
    from tokpack.codec.weights import cached_build

    return cached_build(spec.name, lambda: build_test_state_dict(spec))


def load(spec: ModelSpec, path: Path, device: str) -> EncodecLoaded:
    """Load, check and hash the state dict at ``path``; the model in eval mode on ``device``.

    Weight normalisation is folded into plain weights once, here: the network is built
    without it, on the meta device (no storage, no throwaway random initialisation, the
    caller's RNG untouched), and the file's tensors become the parameters without a copy
    (assign=True), so the model is in memory once.
    """
    import encodec  # noqa: F401  (its imports first: they fragment the heap if interleaved)

    import torch

    from tokpack.codec.memory import drop_file_pages, release_memory
    from tokpack.codec.weights import check_fits, load_checked_state, one_line
    from tokpack.codecs.encodec.architecture import (
        build_architecture,
        fold_weight_norm_state,
        weight_norm_layout,
    )
    from tokpack.errors import ModelError

    with torch.device("meta"):  # shapes only: no storage, no initialisation
        model = build_architecture(spec, plain_weights=True)
    state, digest = load_checked_state(path)  # digest: of the file's tensors, as stored
    check_fits(weight_norm_layout(model, spec), state, f"the {spec.name} architecture", path)
    pairs = [t for key, t in state.items() if key.endswith(("_g", "_v"))]
    state = fold_weight_norm_state(state)
    # assign=True keeps the file's dtypes, where a copy into the parameters would cast
    for key, param in model.state_dict().items():
        if key in state and state[key].dtype != param.dtype:
            state[key] = state[key].to(param.dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # dtype trouble and the like, after the key check
        raise ModelError(f"cannot load weights: {one_line(exc)[:300]}", path=str(path))
    del state
    model.eval().to(device)
    # the weight-norm pairs folded away: their pages of a mapped file (26 MB for the
    # 24 kHz model), the hashing's buffers
    drop_file_pages(pairs, path)
    del pairs
    release_memory()
    return EncodecLoaded(spec=spec, model=model, weights_sha256=digest, weights_path=path,
                         device=device)
