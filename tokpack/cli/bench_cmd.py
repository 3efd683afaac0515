"""tokpack bench: rate, distortion and speed per input x model x bandwidth, with CI thresholds."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tokpack.batch import check_model
from tokpack.cli import batch_run
from tokpack.cli import options as opt
from tokpack.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, Messages, make_messages, usage_error
from tokpack.errors import TokpackError

HEADINGS = ("file", "model", "kbps", "bitrate", "ratio", "SNR", "SI-SDR", "mel", "STOI", "PESQ", "enc xRT", "dec xRT")


def violations(row, *, max_kbps: float | None, min_si_sdr: float | None, max_mel_distance: float | None) -> list[str]:
    """What is out of bounds in one bench row, one phrase each (naming the option)."""
    from tokpack.compare import format_db

    out = []
    if max_kbps is not None and row.bitrate_bps is not None and row.bitrate_bps > max_kbps * 1000:
        out.append(f"bitrate {row.bitrate_bps / 1000:.3f} kbps exceeds --max-kbps {max_kbps:g}")
    si_sdr = row.metrics.si_sdr_db
    if min_si_sdr is not None and si_sdr < min_si_sdr:  # +inf passes, -inf fails
        out.append(f"SI-SDR {format_db(si_sdr)} is below --min-si-sdr {min_si_sdr:g}")
    mel = row.metrics.mel_distance
    if max_mel_distance is not None and mel > max_mel_distance:
        out.append(f"mel distance {mel:.4f} exceeds --max-mel-distance {max_mel_distance:g}")
    return out


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return fmt.format(value)


def table_rows(rows) -> list[tuple[str, ...]]:
    return [
        (
            r.path, r.model, f"{r.bandwidth_kbps:g}", _num(None if r.bitrate_bps is None else r.bitrate_bps / 1000, "{:.2f}"),
            f"{r.compression_ratio:.1f}x", _num(r.metrics.snr_db, "{:.2f}"), _num(r.metrics.si_sdr_db, "{:.2f}"),
            f"{r.metrics.mel_distance:.3f}", _num(r.metrics.stoi, "{:.3f}"), _num(r.metrics.pesq_wb, "{:.2f}"),
            f"{r.encode_rtf:.1f}", f"{r.decode_rtf:.1f}",
        )
        for r in rows
    ]


def print_table(rows) -> None:
    """A rich table on a terminal; aligned plain text otherwise (bitrate in kbps, dB, x real time)."""
    cells = table_rows(rows)
    if not sys.stdout.isatty():
        widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HEADINGS)]
        lines = [HEADINGS] + cells
        text = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))).rstrip()
                for line in lines]
        sys.stdout.write("\n".join(text) + "\n")
        return
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # One table per input and model, titled with them, so that 80 columns hold every number.
    console = Console()
    groups: dict[tuple[str, str], list] = {}
    for c in cells:
        groups.setdefault(c[:2], []).append(c[2:])
    for (path, model), group in groups.items():
        table = Table(title=f"{escape(path)} [dim]·[/dim] {escape(model)}", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False, collapse_padding=True)
        for heading in HEADINGS[2:]:
            table.add_column(heading.replace(" ", "\n"), justify="right", no_wrap=True)
        for c in group:
            table.add_row(*c)
        console.print(table)
    console.print("bitrate: kbps of container; SNR, SI-SDR: dB; xRT: audio seconds per second", style="dim")


class _Writer:
    """Rows to stdout as NDJSON, CSV, or kept for the table at the end."""

    def __init__(self, fmt: str, say: Messages) -> None:
        from tokpack.bench import ROW_KEYS

        self.fmt = fmt
        self.say = say
        self.rows: list = []
        self.failed = 0
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(sys.stdout, lineterminator="\n")
            self._csv.writerow(ROW_KEYS)

    def add(self, item) -> None:
        from tokpack.bench import ROW_KEYS, BenchFailure

        if isinstance(item, BenchFailure):
            self.failed += 1
            where = f"{item.model} at {item.bandwidth_kbps:g} kbps: " if item.model else ""
            self.say.error(item.path, where + item.error)
            if self.fmt == "json":
                sys.stdout.write(json.dumps(item.to_json()) + "\n")
            return
        self.rows.append(item)
        obj = item.to_json()
        if self.fmt == "json":
            sys.stdout.write(json.dumps(obj) + "\n")
        elif self._csv is not None:
            self._csv.writerow(["" if obj[k] is None else obj[k] for k in ROW_KEYS])
        sys.stdout.flush()


def _progress(enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, redirect_stdout=False)


def _sources(files: list[str]):
    for name in files:
        if name == "-":
            buf = io.BytesIO(sys.stdin.buffer.read())
            buf.name = "<stdin>"
            yield buf
        else:
            yield name


def bench_command(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Audio files or directories (walked for audio files); '-' for stdin.")],
    models: Annotated[
        Optional[list[str]],
        typer.Option("--model", "-m", metavar="NAME", help="Codec model; repeat for several (default: encodec_24khz)."),
    ] = None,
    bandwidths: Annotated[
        Optional[list[float]],
        typer.Option("--bandwidth", "-b", metavar="KBPS", help="Bandwidth; repeat for several (default: every bandwidth of each model)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One NDJSON object per input x model x bandwidth on stdout.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="CSV on stdout: a header, then one row per input x model x bandwidth.")] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option("--plot", metavar="FILE.png", dir_okay=False, help="Draw rate-distortion curves to a PNG (needs matplotlib)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing --plot file.")] = False,
    max_kbps: opt.MaxKbps = None,
    min_si_sdr: Annotated[
        Optional[float], typer.Option("--min-si-sdr", metavar="Y", help="Exit 1, naming it, if an SI-SDR is below Y dB.")
    ] = None,
    max_mel_distance: Annotated[
        Optional[float], typer.Option("--max-mel-distance", metavar="Z", help="Exit 1, naming it, if a log-mel distance exceeds Z.")
    ] = None,
    device: opt.DeviceOpt = opt.Device.cpu,
    threads: opt.Threads = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Encode and decode each INPUT in memory with each model and bandwidth; report size, quality and speed."""
    from tokpack.bench import SCHEMA_VERSION, bench, find_audio, plan_cells
    from tokpack.cli.report import show_progress

    say = make_messages(quiet, verbose, debug)
    if json_output and csv_output:
        raise usage_error("--json and --csv are mutually exclusive")
    files = find_audio(inputs)
    if not files:
        raise usage_error("no audio files found in the inputs")
    if files.count("-") > 1:
        raise usage_error("stdin ('-') can be read only once")
    names = models or ["encodec_24khz"]
    for name in names:
        batch_run.checked(check_model, name)
    cells, skipped = say.run(None, lambda: plan_cells(names, bandwidths))
    for name, bw in skipped:
        say.warning(None, f"model {name} has no bandwidth {bw:g} kbps; skipped for it")
    if plot is not None:
        from tokpack.plot import has_matplotlib

        if not has_matplotlib():
            say.error(str(plot), "--plot needs matplotlib: pip install 'tokpack[plot]'")
            raise typer.Exit(EXIT_FAILED)
        if plot.exists() and not force:
            say.error(str(plot), "already exists (use -f to overwrite)")
            raise typer.Exit(EXIT_FAILED)

    def load(name: str):
        from tokpack.codec.weights import load_model

        try:
            return load_model(name, device=device.value)
        except (TokpackError, OSError) as exc:
            message = say.report(name, exc)
            if json_output:
                sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, "path": None, "model": name,
                                             "bandwidth_kbps": None, "error": message}) + "\n")
            raise typer.Exit(EXIT_FAILED) from None

    writer = _Writer("json" if json_output else "csv" if csv_output else "table", say)
    show = show_progress(progress, quiet=say.verbosity < 0, stderr_is_tty=sys.stderr.isatty())
    try:
        loaded = [load(name) for name in dict.fromkeys(names)]
        with _progress(show) as bar:
            task = bar.add_task("bench", total=len(files) * len(cells)) if bar is not None else None
            for item in bench(list(_sources(files)), loaded, bandwidths, threads=threads):
                writer.add(item)
                if bar is not None:
                    done = item.model if item.model is not None else "failed"
                    bar.update(task, advance=1 if item.model is not None else len(cells),
                               description=f"{Path(item.path).name} {done}")
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if writer.fmt == "table" and writer.rows:
        print_table(writer.rows)
    if plot is not None and writer.rows:
        from tokpack.plot import plot_rate_distortion

        say.run(str(plot), lambda: plot_rate_distortion(writer.rows, plot, overwrite=force))
        say.verbose(f"tokpack: {plot}: rate-distortion plot written")
    out_of_bounds = 0
    for row in writer.rows:
        for problem in violations(row, max_kbps=max_kbps, min_si_sdr=min_si_sdr, max_mel_distance=max_mel_distance):
            say.error(row.path, f"{row.model} at {row.bandwidth_kbps:g} kbps: {problem}")
            out_of_bounds += 1
    if writer.failed or out_of_bounds:
        raise typer.Exit(EXIT_FAILED)
