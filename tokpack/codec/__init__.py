"""The codec layer: models, weights, audio I/O, and the encode/decode engine.

Importing this package (and the registry) does not import torch; torch, torchaudio
and encodec are imported inside the functions that run a model.
"""

_WHERE = {
    "engine": ("DecodeResult", "EncodeResult", "decode", "encode", "encode_array"),
    "registry": ("DEFAULT_MODEL", "MODELS", "ModelSpec", "get_spec", "list_models"),
    "weights": ("LoadedModel", "load_model", "resolve_weights", "weights_sha256"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE)


def __getattr__(name: str):
    """The package's names, each imported with its module on first use: a command that
    needs only the registry does not import the engine (numpy, the container format)."""
    if name in _MODULE:
        import importlib

        return getattr(importlib.import_module(f"tokpack.codec.{_MODULE[name]}"), name)
    raise AttributeError(f"module 'tokpack.codec' has no attribute {name!r}")
