"""The typer application: global options and the command table."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand

from tokpack import __version__
from tokpack.cli.output import EXIT_INTERRUPTED
from tokpack.cli.bench_cmd import bench_command
from tokpack.cli.compare_cmd import compare_command
from tokpack.cli.dataset_cmd import dataset_app, dataset_encode_command
from tokpack.cli.decode import decode_command
from tokpack.cli.encode import encode_command
from tokpack.cli.inspect_cmd import inspect_command
from tokpack.cli.models_cmd import models_command
from tokpack.cli.pack_cmd import pack_command, unpack_command
from tokpack.cli.train_prior import train_prior_command

class Command(TyperCommand):
    """Help as zstd and flac users read it: plain text in 80 columns, arguments shown by
    their metavar (``INPUT...``) without typer's type names (``<list[str]>``)."""

    def get_params(self, ctx: typer.Context) -> list:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = lambda ctx: None  # typer >= 0.16 shows the type
        return params

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or param.name.upper()
                if param.nargs != 1 and not name.endswith("..."):
                    name += "..."
                pieces.append(name if param.required else f"[{name}]")
        return pieces


app = typer.Typer(
    name="tokpack",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help; usage errors in one line, as every other error
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 80},
    help="Compress audio into compact neural-codec token containers (.tpk) and back.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tokpack {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=_version, help="Show the version and exit.")
    ] = False,
) -> None:
    """Compress audio into compact neural-codec token containers (.tpk) and back."""


for name, function, short in (
    ("encode", encode_command, "Audio -> .tpk token containers (or EnCodec .ecdc files)."),
    ("decode", decode_command, ".tpk or .ecdc -> audio (WAV, FLAC); -t only verifies."),
    ("inspect", inspect_command, "What a container holds and what its tokens cost."),
    ("compare", compare_command, "SNR, SI-SDR, mel distance (STOI, PESQ) against a reference."),
    ("bench", bench_command, "Bitrate against quality for models and bandwidths."),
    ("train-prior", train_prior_command, "A CTX prior (.tpp) from your audio or containers."),
    ("pack", pack_command, "Any codec's token array (.npy, .pt) -> .tpk, no model."),
    ("unpack", unpack_command, "The tokens of any .tpk -> .npy, no model, no torch."),
    ("models", models_command, "The codec models: rates, bandwidths, weights."),
):
    app.command(name, cls=Command, short_help=short)(function)

dataset_app.command("encode", cls=Command, short_help="Audio -> Parquet or WebDataset shards, resumable.")(
    dataset_encode_command)
app.add_typer(dataset_app, name="dataset", short_help="Corpora -> shards for training (local or Ray).")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning (torch, encodec, soundfile) as one line of ours on stderr, naming
    where it came from, not a source line and a traceback-like location."""
    import sys
    from pathlib import Path

    parts = Path(filename).parts  # .../site-packages/torch/serialization.py -> torch
    origin = parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else Path(filename).stem
    text = " ".join(str(message).split())
    if len(text) > 200:
        text = text[:200] + "..."
    sys.stderr.write(f"tokpack: warning: {origin} says: {text}\n")


def main() -> None:
    """The console script: typer's app, with usage errors (a missing argument, an unknown
    option) in one line and exit status 2, like the errors the commands report. (A closed
    stdout, ``| head``, ends it quietly with status 1: click's own handling.)"""
    import sys
    import warnings

    warnings.showwarning = _one_line_warning
    command = typer.main.get_command(app)
    try:
        status = command.main(prog_name="tokpack", standalone_mode=False)
    except Exception as exc:
        kind = type(exc).__name__
        if kind == "Abort":  # Ctrl-C while click was parsing
            sys.exit(EXIT_INTERRUPTED)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            # the last resort, outside any command's own handling: one line, exit 1
            import os
            import traceback

            from tokpack.errors import internal_error

            if "--debug" in sys.argv or os.environ.get("TOKPACK_DEBUG", "") not in ("", "0"):
                traceback.print_exception(exc)
            sys.stderr.write(f"tokpack: {internal_error(exc)}\n")
            sys.exit(1)
        ctx = getattr(exc, "ctx", None)  # click's UsageError (or another ClickException)
        if kind == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            sys.exit(exc.exit_code)
        message = exc.format_message().rstrip(".")
        message = message[:1].lower() + message[1:]
        where = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        sys.stderr.write(f"tokpack: {message}{where}\n")
        sys.exit(exc.exit_code)
    sys.exit(status if isinstance(status, int) else 0)
