"""Build the untrained EnCodec network for a model spec (imports torch and encodec)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from tokpack.codec.registry import ModelSpec

if TYPE_CHECKING:
    from encodec import EncodecModel


def build_architecture(spec: ModelSpec) -> EncodecModel:
    """The network of ``spec`` with freshly initialised weights, in eval mode.

    Built exactly as ``EncodecModel.encodec_model_24khz/48khz(pretrained=False)`` do, so an
    official state dict fits it key for key. Parameter initialisation draws from torch's
    global RNG: seed it first when the weights matter (test models).
    """
    from encodec import EncodecModel

    is_48k = spec.segmented
    with warnings.catch_warnings():
        # encodec 0.1.1 uses the deprecated torch.nn.utils.weight_norm; its keys
        # (weight_g/weight_v) are what the official checkpoints contain, so keep it.
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        model = EncodecModel._get_model(
            list(spec.bandwidths),
            spec.sample_rate,
            spec.channels,
            causal=spec.causal,
            model_norm="time_group_norm" if is_48k else "weight_norm",
            audio_normalize=is_48k,
            segment=(spec.segment_length / spec.sample_rate) if is_48k else None,
            name=spec.name,
        )
    model.eval()
    return model
