"""tokpack: audio <-> compact neural-codec token containers.

``tokpack.encode`` and ``tokpack.decode`` are the library functions the CLI wraps; they
(and torch) are imported on first use, so ``import tokpack`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "encode", "decode"]


def __getattr__(name: str):
    if name in ("encode", "decode"):
        from tokpack.codec import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'tokpack' has no attribute {name!r}")
