"""Everything the CLI says: messages on stderr, summary lines, exit codes, guarded runs.

Data (container bytes, audio, JSON) goes to stdout and nothing else does.  Messages are
plain text on stderr in the form ``tokpack: PATH: message``; no traceback unless
``--debug``.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, TypeVar

import typer

from tokpack.errors import TokpackError, internal_error

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def human_bytes(n: int) -> str:
    """Binary units like zstd: ``512 B``, ``68.4 KiB``, ``5.6 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class Messages:
    """Writes messages to stderr according to -q/-v."""

    verbosity: int = 0  # -1 quiet, 0 normal, >0 verbose
    debug: bool = False

    def error(self, path: str | None, message: str) -> None:
        _say(path, message)

    def warning(self, path: str | None, message: str) -> None:
        if self.verbosity >= 0:
            _say(path, f"warning: {message}")

    def info(self, line: str) -> None:
        if self.verbosity >= 0:
            sys.stderr.write(line + "\n")

    def verbose(self, line: str) -> None:
        if self.verbosity > 0:
            sys.stderr.write(line + "\n")

    def report(self, path: str | None, exc: TokpackError | OSError) -> str:
        """Print an expected failure as one line (traceback with --debug); return the message."""
        if self.debug:
            traceback.print_exception(exc)
        if isinstance(exc, TokpackError):
            # The error may already carry the path; don't say it twice.
            path, message = exc.path or path, exc.message
        else:
            path = exc.filename if isinstance(exc.filename, str) else path
            message = exc.strerror or str(exc)
        self.error(path, message)
        return message

    def run(self, path: str | None, fn: Callable[[], T]) -> T:
        """Run ``fn``; turn expected failures into one line and exit 1 (130 on Ctrl-C)."""
        try:
            return fn()
        except KeyboardInterrupt:
            if self.debug:
                traceback.print_exc()
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            raise  # stdout's reader went away: click ends quietly (exit 1), as Unix tools do
        except (TokpackError, OSError) as exc:
            self.report(path, exc)
            raise typer.Exit(EXIT_FAILED) from None
        except Exception as exc:  # the last resort: MemoryError, RecursionError, a bug
            if isinstance(exc, (typer.Exit, typer.Abort)) or hasattr(exc, "exit_code"):
                raise  # typer's exits and usage errors: main() says them
            if self.debug:
                traceback.print_exception(exc)
            self.error(path, internal_error(exc))
            raise typer.Exit(EXIT_FAILED) from None


def _say(path: str | None, message: str) -> None:
    prefix = f"tokpack: {path}: " if path else "tokpack: "
    sys.stderr.write(prefix + message + "\n")


def usage_error(message: str) -> typer.Exit:
    _say(None, message)
    return typer.Exit(EXIT_USAGE)


def make_messages(quiet: int, verbose: int, debug: bool) -> Messages:
    debug = debug or os.environ.get("TOKPACK_DEBUG", "") not in ("", "0")
    if debug:
        os.environ["TOKPACK_DEBUG"] = "1"  # batch workers print their tracebacks too
    return Messages(verbosity=verbose - quiet, debug=debug)
