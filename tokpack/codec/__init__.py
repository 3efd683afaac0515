"""The codec layer: models, weights, audio I/O, and the encode/decode engine.

Importing this package (and the registry) does not import torch; torch, torchaudio
and encodec are imported inside the functions that run a model.
"""

from tokpack.codec.engine import (
    DecodeResult,
    EncodeResult,
    decode,
    encode,
    encode_array,
)
from tokpack.codec.registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    get_spec,
    list_models,
)
from tokpack.codec.weights import (
    LoadedModel,
    load_model,
    resolve_weights,
    weights_sha256,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "DecodeResult",
    "EncodeResult",
    "LoadedModel",
    "ModelSpec",
    "decode",
    "encode",
    "encode_array",
    "get_spec",
    "list_models",
    "load_model",
    "resolve_weights",
    "weights_sha256",
]
