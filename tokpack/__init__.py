"""tokpack: audio <-> compact neural-codec token containers.

``tokpack.encode`` and ``tokpack.decode`` are the library functions the CLI wraps (files
and file objects; an existing output is kept unless ``overwrite=True``);
``tokpack.encode_array`` and ``tokpack.decode_tokens`` do the same in memory (samples ->
tokens + header -> samples), and ``tokpack.inspect`` is ``tokpack inspect``. They (and
torch) are imported on first use, so ``import tokpack`` stays light.
``tokpack.pack_tokens`` and ``tokpack.unpack_tokens`` store any codec's token array in a
container and give it back (``tokpack pack``/``unpack``; numpy only, no model).
"""

__version__ = "0.1.0"

_ENGINE = ("encode", "decode", "encode_array", "decode_tokens")
_TOKENS = {"pack_tokens": "pack", "unpack_tokens": "unpack"}
__all__ = ["__version__", *_ENGINE, "inspect", *_TOKENS]


def __getattr__(name: str):
    if name in _ENGINE:
        from tokpack.codec import engine

        return getattr(engine, name)
    if name == "inspect":
        from tokpack.codec.tokens_io import inspect

        return inspect
    if name in _TOKENS:
        from tokpack.formats import tokens

        return getattr(tokens, _TOKENS[name])
    raise AttributeError(f"module 'tokpack' has no attribute {name!r}")
