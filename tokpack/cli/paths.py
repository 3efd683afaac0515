"""Where input comes from and output goes: '-' for stdin/stdout, default names, no clobbering."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tokpack.cli.output import usage_error
from tokpack.errors import TokpackError

STDIO = "-"


@dataclass(frozen=True)
class Destination:
    """A resolved output: a path, or stdout when ``path`` is None."""

    path: Path | None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<stdout>"

    def target(self) -> Path | BinaryIO:
        return self.path if self.path is not None else sys.stdout.buffer


def read_source(name: str) -> Path | BinaryIO:
    """A path, or all of stdin in memory for '-' (readers need a seekable file)."""
    if name == STDIO:
        return io.BytesIO(sys.stdin.buffer.read())
    return Path(name)


def resolve_destination(
    source: str, output: str | None, stdout: bool, suffix: str, *, force: bool
) -> Destination:
    """Apply the zstd/flac conventions; raise typer.Exit(2) on a usage error."""
    if stdout and output not in (None, STDIO):
        raise usage_error("-c/--stdout and -o FILE are mutually exclusive")
    if stdout or output == STDIO:
        dest = Destination(None)
    elif output is not None:
        dest = Destination(Path(output))
    elif source == STDIO:
        raise usage_error("reading from stdin: give -o FILE or -c to write to stdout")
    else:
        dest = Destination(Path(source).with_suffix(suffix))

    if dest.path is None:
        if sys.stdout.isatty() and not force:
            raise TokpackError("refusing to write binary data to a terminal (use -f to force)", path="<stdout>")
        return dest
    if source != STDIO and dest.path.exists() and os.path.exists(source) and os.path.samefile(source, dest.path):
        raise TokpackError("input and output are the same file", path=str(dest.path))
    if dest.path.exists() and not force:
        raise TokpackError("already exists; use -f to overwrite", path=str(dest.path))
    return dest
