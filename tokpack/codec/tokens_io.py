"""Opening a file of tokens without the audio engine: a .tpk container or EnCodec's .ecdc
file, the stats ``tokpack inspect`` shows, the model a file names. Imports neither torch
nor the audio modules (``tokpack inspect`` is this and numpy)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, BinaryIO, Union

from tokpack.errors import TokpackError, UsageError
from tokpack.formats import ContainerReader
from tokpack.formats.salvage import SalvageReader

if TYPE_CHECKING:
    from tokpack.codecs.encodec.ecdc import EcdcReader

Src = Union[str, os.PathLike, BinaryIO]
ChunkSource = Union[ContainerReader, SalvageReader]  # header, TOKENS chunks in order, trailer


class CountingReader:
    """Counts the bytes a reader pulls from a file object; ``peek`` looks ahead (a pipe
    cannot seek back)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._ahead = b""
        self.count = 0

    def peek(self, n: int) -> bytes:
        while len(self._ahead) < n:
            more = self._f.read(n - len(self._ahead))
            if not more:
                break
            self._ahead += more
        return self._ahead[:n]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data, self._ahead = self._ahead + self._f.read(), b""
        else:
            data, self._ahead = self._ahead[:n], self._ahead[n:]
            if len(data) < n:
                data += self._f.read(n - len(data))
        self.count += len(data)
        return data


def open_tokens(f: BinaryIO, label: str, *, salvage: bool = False,
                lm_weights=None, priors=()) -> ChunkSource | EcdcReader:
    """A reader of the tokens in ``f``: a .tpk container (ContainerReader, or SalvageReader
    with ``salvage``) or, by its magic, EnCodec's .ecdc file (codecs.encodec.ecdc.EcdcReader; an
    LM-coded one loads the LM: ``lm_weights`` or the usual search). A ``label`` ending in
    .ecdc without the magic fails as a bad .ecdc file. ``priors``: .tpp files to look in
    for the CTX prior a container names (besides $TOKPACK_PRIOR_PATH and the shipped ones)."""
    from tokpack.codecs.encodec.ecdc import MAGIC, EcdcReader

    reader = f if isinstance(f, CountingReader) else CountingReader(f)
    if reader.peek(len(MAGIC)) == MAGIC or label.lower().endswith(".ecdc"):
        if salvage:
            raise UsageError("--salvage reads .tpk containers; an .ecdc file has no checksums "
                             "to tell what is intact")
        return EcdcReader(reader, path=label, lm_weights=lm_weights)
    if salvage:
        return SalvageReader(reader, priors=priors)
    return ContainerReader(reader, path=label, priors=priors)


def inspect(src: Src, *, path: str | None = None, priors=(), lm_weights=None):
    """formats.stats.ContainerStats of a .tpk container or, by its magic, an .ecdc file
    (whose tokens an LM-coded one needs the LM for: ``lm_weights`` or the usual search)."""
    from tokpack.codecs.encodec.ecdc import EcdcReader
    from tokpack.formats.stats import reader_stats

    owned = isinstance(src, (str, os.PathLike))
    label = path or (os.fsdecode(src) if owned else "<stdin>")
    f = open(src, "rb") if owned else src
    try:
        with open_tokens(f, label, priors=priors, lm_weights=lm_weights) as reader:
            if isinstance(reader, EcdcReader):
                coder = "encodec_lm" if reader.info.use_lm else "bitpack"
                return reader_stats(reader, file_format="ecdc", coder=coder)
            return reader_stats(reader)
    finally:
        if owned:
            f.close()


def read_model_id(src: Src) -> str:
    """The model a .tpk container or .ecdc file names (a file object is read from its
    position and sought back there). As :func:`open_tokens`, a path ending in .ecdc is
    read as one."""
    from tokpack.codecs.encodec.ecdc import MAGIC, read_ecdc_info
    from tokpack.formats import read_header

    named = isinstance(src, (str, os.PathLike)) and os.fsdecode(src).lower().endswith(".ecdc")

    def model_id(f: BinaryIO) -> str:
        start = f.tell()
        is_ecdc = f.read(len(MAGIC)) == MAGIC or named
        f.seek(start)
        if is_ecdc:
            result = read_ecdc_info(f).model
        else:
            header = read_header(f)
            if header.tokens_only:
                raise TokpackError(
                    f"holds tokens only ({header.model_id}, from tokpack pack): there is no model to "
                    "decode them with; 'tokpack unpack' gives the array")
            result = header.model_id
        f.seek(start)
        return result

    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            return model_id(f)
    return model_id(src)
