"""The tokpack container format (docs/FORMAT.md): numpy, zstandard and constriction only, no torch."""

from tokpack.formats.chunk import Chunk, Trailer
from tokpack.formats.container import (
    Container,
    dumps,
    loads,
    read_container,
    read_header,
    read_tokens,
)
from tokpack.formats.header import Header
from tokpack.formats.reader import ContainerReader
from tokpack.formats.spec import (
    MAGIC,
    UNKNOWN,
    VERSION_MAJOR,
    VERSION_MINOR,
    ZSTD_LEVEL,
    ChannelMode,
    ChunkType,
    Coder,
    Resampler,
)
from tokpack.formats.writer import ContainerWriter

__all__ = [
    "MAGIC",
    "UNKNOWN",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "ZSTD_LEVEL",
    "ChannelMode",
    "Chunk",
    "ChunkType",
    "Coder",
    "Container",
    "ContainerReader",
    "ContainerWriter",
    "Header",
    "Resampler",
    "Trailer",
    "dumps",
    "loads",
    "read_container",
    "read_header",
    "read_tokens",
]
