"""tokpack inspect: what is in a container, and what its tokens cost (never imports torch)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from tokpack.cli import options as opt
from tokpack.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, human_bytes, make_messages
from tokpack.errors import TokpackError
from tokpack.formats.prior import prior_label


def _rows(s) -> list[tuple[str, str]]:
    return _tokens_only_rows(s) if s.tokens_only else _rows_common(s)


def _rows_common(s) -> list[tuple[str, str]]:
    duration = f"{s.duration_s:.3f} s ({s.source_frames} frames at {s.source_sample_rate} Hz, {s.source_channels} ch)"
    bitrate = f"{s.bitrate_bps / 1000:.3f} kbps" if s.bitrate_bps is not None else "n/a (empty)"
    return [
        ("model", f"{s.model_id} (weights {s.weights_sha256[:12]})" if s.format == "tpk"
         else f"{s.model_id} (EnCodec .ecdc file: no weights identity, no checksums)"),
        ("model format", f"{s.model_sample_rate} Hz, {s.model_channels} ch, {s.frame_rate_hz:g} frames/s"),
        ("codebooks", f"{s.n_codebooks} x {s.codebook_size} ({s.bits_per_code} bits), {s.n_streams} stream(s), channels {s.channel_mode}"),
        ("source", duration),
        ("file", f"{s.file_bytes} bytes ({human_bytes(s.file_bytes)}), {s.n_chunks} chunks, {s.total_frames} frames"
         + (f", written live ({s.frames_per_chunk}-frame packets)" if s.live else "")),
        ("bitrate", f"{bitrate} actual, {s.nominal_bitrate_bps / 1000:g} kbps nominal"),
        ("compression", "n/a (tokens only)" if s.compression_ratio is None
         else f"{s.compression_ratio:.1f}x vs 16-bit PCM"),
        ("overhead", f"{s.overhead_bytes} bytes " + ("(header, framing, segment tables, END)"
                                                     if s.format == "tpk" else "(header, scales)")),
        ("coders", (", ".join(f"{name} {n}" for name, n in s.coders.items() if n) or "none")
         + (f" (CTX models carried, afresh every {s.ctx_keyframe} chunks: "
            f"{s.ctx_keyframe * s.frames_per_chunk / s.frame_rate_hz:g} s)"
            if s.ctx_keyframe > 1 else "")),
        ("prior", prior_label(s.prior_sha256, s.codebook_size)
         or ("none (format 1.0)" if s.format == "tpk" else "none (.ecdc)")),
    ]


def _tokens_only_rows(s) -> list[tuple[str, str]]:
    """A tokpack pack container: a codec's tokens, no model and no audio."""
    rows = _rows_common(s)
    rows[0:2] = [("codec", f"{s.model_id} (tokens only, from tokpack pack: no model)"),
                 ("frame rate", f"{s.frame_rate_hz:g} frames/s")]
    rows[3] = ("duration", f"{s.duration_s:.3f} s ({s.total_frames} frames)")
    del rows[6]  # no audio to compare with PCM
    return rows


def _codebook_rows(s) -> list[tuple[str, ...]]:
    return [
        (str(c.index), str(c.distinct_codes), f"{c.utilisation:.1%}", f"{c.entropy_bits:.3f}", f"{c.coded_bits:.3f}", f"{-c.coder_gain:+.1%}")
        for c in s.codebooks
    ]


CODEBOOK_HEADINGS = ("codebook", "distinct", "used", "entropy bits", "coded bits", "vs packing")


def print_plain(s) -> None:
    out = [s.path or "<stdin>"]
    out += [f"  {key:<12} {value}" for key, value in _rows(s)]
    out.append("  " + "  ".join(f"{h:>12}" for h in CODEBOOK_HEADINGS))
    out += ["  " + "  ".join(f"{v:>12}" for v in row) for row in _codebook_rows(s)]
    sys.stdout.write("\n".join(out) + "\n")


def print_rich(s) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=s.path or "<stdin>", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    for key, value in _rows(s):
        summary.add_row(key, value)
    console.print(summary)
    table = Table(*CODEBOOK_HEADINGS)
    for row in _codebook_rows(s):
        table.add_row(*row)
    console.print(table)


def inspect_command(
    files: Annotated[list[str], typer.Argument(metavar="FILE...", help="Containers (.tpk, or EnCodec .ecdc files) to inspect ('-' for stdin).")],
    json_output: Annotated[bool, typer.Option("--json", help="One NDJSON object per file on stdout.")] = False,
    max_kbps: opt.MaxKbps = None,
    prior: opt.Priors = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Show a container's model, rates, sizes and per-codebook token statistics."""
    from tokpack.codec.tokens_io import inspect
    from tokpack.formats.stats import SCHEMA_VERSION

    say = make_messages(quiet, verbose, debug)
    failed = False
    for name in files:
        try:
            stats = inspect(sys.stdin.buffer if name == "-" else name, priors=prior or ())
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (TokpackError, OSError) as exc:
            message = say.report(name, exc)
            failed = True
            if json_output:
                sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, "path": name, "error": message}) + "\n")
            continue
        if json_output:
            sys.stdout.write(json.dumps(stats.to_json()) + "\n")
        elif sys.stdout.isatty():
            print_rich(stats)
        else:
            print_plain(stats)
        if max_kbps is not None and stats.bitrate_bps is not None and stats.bitrate_bps > max_kbps * 1000:
            say.error(name, f"bitrate {stats.bitrate_bps / 1000:.3f} kbps exceeds --max-kbps {max_kbps:g}")
            failed = True
    if failed:
        raise typer.Exit(EXIT_FAILED)
