"""Build the untrained EnCodec network for a model spec (imports torch and encodec)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from tokpack.codec.registry import ModelSpec

if TYPE_CHECKING:
    import torch
    from encodec import EncodecModel


def build_architecture(spec: ModelSpec, *, plain_weights: bool = False) -> EncodecModel:
    """The network of ``spec`` in eval mode.

    Built exactly as ``EncodecModel.encodec_model_24khz/48khz(pretrained=False)`` do, so an
    official state dict fits it key for key. Parameter initialisation draws from torch's
    global RNG: seed it first when the weights matter (test models).

    ``plain_weights``: convolutions without weight normalisation (plain ``weight``
    parameters), for a state dict whose ``weight_g``/``weight_v`` pairs were folded
    (:func:`fold_weight_norm_state`). Built under ``torch.device("meta")``, the network
    has shapes but no storage (no time, no memory, no RNG draw), for weights that are
    about to be assigned.
    """
    from encodec import EncodecModel

    is_48k = spec.segmented
    norm = "time_group_norm" if is_48k else ("none" if plain_weights else "weight_norm")
    with warnings.catch_warnings():
        # encodec 0.1.1 uses the deprecated torch.nn.utils.weight_norm; its keys
        # (weight_g/weight_v) are what the official checkpoints contain, so keep it.
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        model = EncodecModel._get_model(
            list(spec.bandwidths),
            spec.sample_rate,
            spec.channels,
            causal=spec.causal,
            model_norm=norm,
            audio_normalize=is_48k,
            segment=(spec.segment_length / spec.sample_rate) if is_48k else None,
            name=spec.name,
        )
    model.eval()
    return model


def weight_norm_layout(plain: EncodecModel, spec: ModelSpec) -> dict[str, tuple]:
    """Key -> shape of the state dict of ``spec``'s (official) architecture, from a
    ``plain_weights`` build: each normalised conv weight ``W`` is stored as ``W_g``
    (one norm per output row of dim 0) and ``W_v`` (W's shape)."""
    from encodec.modules.conv import NormConv1d, NormConvTranspose1d

    layout = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    if spec.segmented:  # time_group_norm: no weight normalisation
        return layout
    for name, module in plain.named_modules():
        if isinstance(module, (NormConv1d, NormConvTranspose1d)):
            key = f"{name}.{'conv' if isinstance(module, NormConv1d) else 'convtr'}.weight"
            shape = layout.pop(key)
            layout[key + "_g"] = (shape[0],) + (1,) * (len(shape) - 1)
            layout[key + "_v"] = shape
    return layout


def fold_weight_norm_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each ``X_g``/``X_v`` pair -> ``X = g * v / ||v||`` (norm over all dims but 0).

    ``torch._weight_norm`` is the function torch's weight-norm hook calls on every
    forward, so the weights, and every output, are bit-identical to the normalised
    model's; they are just computed once. The pairs are replaced one at a time (the
    peak is one tensor more than ``state``), in place, and ``state`` is returned.
    """
    import torch

    for key in [k for k in state if k.endswith("_g")]:
        base = key[:-2]
        if base + "_v" not in state:
            continue
        g = state.pop(key)
        v = state.pop(base + "_v")
        state[base] = torch._weight_norm(v, g, 0)
    return state
