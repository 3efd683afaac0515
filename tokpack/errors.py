"""The one exception hierarchy of tokpack.

Every error raised on purpose by tokpack is a :class:`TokpackError`; the CLI turns
them into one line ``tokpack: PATH: message`` and exit status 1.  Errors about bytes
read from a container are :class:`FormatError` subclasses and say where (byte offset)
and which field was wrong.
"""

from __future__ import annotations


class TokpackError(Exception):
    """Base class: an expected failure with a message fit for a user."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FormatError(TokpackError, ValueError):
    """The bytes are not a valid tokpack container."""

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        field: str | None = None,
        path: str | None = None,
    ) -> None:
        where = []
        if offset is not None:
            where.append(f"offset {offset}")
        if field is not None:
            where.append(field)
        full = f"{', '.join(where)}: {message}" if where else message
        super().__init__(full, path=path)
        self.offset = offset
        self.field = field


class BadMagic(FormatError):
    """The file does not start with the tokpack magic number."""


class UnsupportedVersion(FormatError):
    """The container's major version is not one this reader knows."""


class UnsupportedFeature(FormatError):
    """A critical chunk type or entropy coder this reader does not know."""


class Truncated(FormatError):
    """The data ended before a structure was complete."""


class ChecksumMismatch(FormatError):
    """A CRC or digest stored in the file does not match the data."""


class FieldOutOfRange(FormatError):
    """A field holds a value outside its allowed range (reserved bits included)."""


class PriorNotFound(TokpackError):
    """A container was coded with a CTX prior (named by its SHA-256) that is not available."""


class AudioError(TokpackError):
    """An audio file cannot be read, is invalid (NaN/inf), or cannot be written."""


class OutputError(TokpackError):
    """An output file cannot be written: no space left on the device, a file size limit, ..."""


class ModelError(TokpackError):
    """A model is unknown, or its weights cannot be found, loaded or trusted."""


class WeightsNotFound(ModelError):
    """The official checkpoint is not cached and cannot be downloaded."""


class WeightsMismatch(ModelError):
    """A container was encoded with other weights than those given for decoding."""


class TokensError(TokpackError):
    """An array that cannot be stored as tokens (``tokpack pack``): not integers, the wrong
    rank, or values outside the codebook."""


class UsageError(TokpackError):
    """The request itself is wrong (conflicting options, a directory without -r, ...)."""


def internal_error(exc: BaseException) -> str:
    """The one line said for a failure no typed error describes (a bug, or a resource
    running out): ``internal error: MemoryError: Unable to allocate ...``."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:200] + "..."
    kind = type(exc).__name__
    if isinstance(exc, MemoryError):
        kind = "out of memory (MemoryError)"
    return f"internal error: {kind}: {text}" if text else f"internal error: {kind}"
