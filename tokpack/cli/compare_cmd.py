"""tokpack compare: reconstruction error between a reference and a degraded audio file."""

from __future__ import annotations

import io
import json
import sys
from typing import Annotated

import typer

from tokpack.cli import options as opt
from tokpack.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, make_messages, usage_error
from tokpack.errors import TokpackError


def _score(value: float | None, fmt: str = "{:.3f}", missing: str = "n/a") -> str:
    return missing if value is None else fmt.format(value)


def rows(r) -> list[tuple[str, str]]:
    from tokpack import metrics
    from tokpack.compare import format_db

    m = r.metrics
    extra = "n/a (pip install 'tokpack[metrics]')"
    return [
        ("compared", f"{r.compared_frames} frames ({r.duration_s:.3f} s) at {r.sample_rate} Hz, {r.channels} ch"),
        ("reference", f"{r.ref_frames} frames at {r.ref_sample_rate} Hz, {r.ref_channels} ch"),
        ("degraded", f"{r.deg_frames} frames at {r.deg_sample_rate} Hz, {r.deg_channels} ch"),
        ("SNR", format_db(m.snr_db)),
        ("SI-SDR", format_db(m.si_sdr_db)),
        ("mel distance", f"{m.mel_distance:.4f}"),
        ("STOI", _score(m.stoi, missing="n/a" if metrics.has_stoi() else extra)),
        ("PESQ (wb)", _score(m.pesq_wb, "{:.2f}", missing="n/a" if metrics.has_pesq() else extra)),
    ]


def print_view(r) -> None:
    """A table on a terminal, plain ``key value`` lines otherwise."""
    title = f"{r.ref_path} vs {r.deg_path}"
    if not sys.stdout.isatty():
        sys.stdout.write("\n".join([title] + [f"  {k:<12} {v}" for k, v in rows(r)]) + "\n")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows(r):
        table.add_row(key, value)
    Console().print(table)


def _source(name: str):
    return io.BytesIO(sys.stdin.buffer.read()) if name == "-" else name


def compare_command(
    ref: Annotated[str, typer.Argument(metavar="REF", help="Reference audio file ('-' for stdin).")],
    degraded: Annotated[str, typer.Argument(metavar="DEGRADED", help="Degraded audio file ('-' for stdin).")],
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Reconstruction error of DEGRADED against REF: SNR, SI-SDR, log-mel distance, STOI, PESQ."""
    from tokpack.compare import SCHEMA_VERSION, compare_files

    say = make_messages(quiet, verbose, debug)
    if ref == "-" and degraded == "-":
        raise usage_error("stdin ('-') can be read only once")
    try:
        result = compare_files(_source(ref), _source(degraded),
                               ref_name="<stdin>" if ref == "-" else ref,
                               deg_name="<stdin>" if degraded == "-" else degraded)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (TokpackError, OSError) as exc:
        message = say.report(None, exc)
        if json_output:
            path = exc.path if isinstance(exc, TokpackError) else exc.filename
            sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, "path": path, "error": message}) + "\n")
        raise typer.Exit(EXIT_FAILED) from None
    if json_output:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        print_view(result)
