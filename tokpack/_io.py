"""Small I/O helpers shared by the library and the CLI (standard library and errors only)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from tokpack.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cannot_write(exc: OSError, path: str | os.PathLike) -> OutputError:
    """``tokpack: PATH: cannot write: No space left on device``."""
    return OutputError(f"cannot write: {exc.strerror or exc}", path=os.fsdecode(path))


def _writing(path: Path, op, *args):
    """``op(*args)``, its OSError an OutputError naming ``path``."""
    try:
        return op(*args)
    except OSError as exc:
        raise cannot_write(exc, path) from None


class _OutputFile(io.BufferedWriter):
    """A temporary output file whose failures to write (a full disk, found at a write, a
    flush, or the flush a seek makes) are OutputErrors naming the final output."""

    def __init__(self, fd: int, final: Path) -> None:
        super().__init__(io.FileIO(fd, "wb"))
        self._final = final

    def write(self, data) -> int:
        return _writing(self._final, super().write, data)

    def flush(self) -> None:
        _writing(self._final, super().flush)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return _writing(self._final, super().seek, offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return _writing(self._final, super().truncate, size)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; rename it to ``path`` only on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left as it was, so a reader never sees a half-written output. Failing to
    create, write, sync or rename it is an OutputError naming ``path``.

    ``overwrite=False``: an existing ``path`` is an OutputError, before anything is
    written and again at the end, where the file is linked into place, which fails if
    something has appeared there meanwhile (no check-then-replace race).
    """
    final = Path(path)
    if not overwrite and os.path.lexists(final):
        raise OutputError("already exists", path=os.fsdecode(final))
    fd, tmp = _writing(final, lambda: tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp",
                                                       dir=final.parent or "."))
    try:
        with _OutputFile(fd, final) as f:
            yield f
            f.flush()
            _writing(final, os.fsync, f.fileno())
        _writing(final, os.chmod, tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        if overwrite:
            _writing(final, os.replace, tmp, final)
        else:
            _link_new(tmp, final)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # the output has its own name now
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _link_new(tmp: str, final: Path) -> None:
    """Give the finished ``tmp`` the name ``final`` only if nothing has it yet."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise OutputError("already exists", path=os.fsdecode(final)) from None
    except OSError as exc:  # a file system without hard links: create the name exclusively
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
            raise cannot_write(exc, final) from None
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputError("already exists", path=os.fsdecode(final)) from None
        _writing(final, os.replace, tmp, final)
