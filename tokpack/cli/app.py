"""The typer application: global options and the command table."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer
from typer.core import TyperGroup

from tokpack import __version__
from tokpack.cli.command import Command
from tokpack.cli.output import EXIT_INTERRUPTED

#: name -> (module under tokpack.cli, its command function or typer sub-app, one line for
#: ``tokpack --help``). A command's module is imported only when that command runs (or
#: shows its help): ``tokpack --help`` and ``tokpack inspect`` do not import what ``encode``
#: or ``dataset`` need.
COMMANDS = {
    "encode": ("encode", "encode_command", "Audio -> .tpk token containers (or EnCodec .ecdc files)."),
    "decode": ("decode", "decode_command", ".tpk or .ecdc -> audio (WAV, FLAC); -t only verifies."),
    "inspect": ("inspect_cmd", "inspect_command", "What a container holds and what its tokens cost."),
    "compare": ("compare_cmd", "compare_command", "SNR, SI-SDR, mel distance (STOI, PESQ) against a reference."),
    "bench": ("bench_cmd", "bench_command", "Bitrate against quality for models and bandwidths."),
    "train-prior": ("train_prior", "train_prior_command", "A CTX prior (.tpp) from your audio or containers."),
    "pack": ("pack_cmd", "pack_command", "Any codec's token array (.npy, .pt) -> .tpk, no model."),
    "unpack": ("pack_cmd", "unpack_command", "The tokens of any .tpk -> .npy, no model, no torch."),
    "models": ("models_cmd", "models_command", "The codec models: rates, bandwidths, weights."),
    "dataset": ("dataset_cmd", "dataset_app", "Corpora -> shards for training (local or Ray)."),
}


def _build(name: str):
    """The click command for ``tokpack NAME``, its module imported now."""
    module, attribute, short = COMMANDS[name]
    target = getattr(importlib.import_module(f"tokpack.cli.{module}"), attribute)
    if isinstance(target, typer.Typer):  # a group of commands
        command = typer.main.get_group(target)
    else:
        function, target = target, typer.Typer(add_completion=False, rich_markup_mode=None)
        target.command(name, cls=Command, short_help=short)(function)
        command = typer.main.get_command(target)
    command.name = name
    command.short_help = short
    return command


class LazyGroup(TyperGroup):
    """tokpack's command table, each command built on first use (click's lazy group)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = _build(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


app = typer.Typer(
    name="tokpack",
    cls=LazyGroup,
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


def console() -> None:
    """The ``tokpack`` console script (and ``python -m tokpack``): :func:`main`, whose exit
    then skips the C-level teardown once torch is loaded and no other thread runs. The
    static destructors of torch's libraries (the CUDA build that torchaudio's wheels need)
    took 0.6 s and raised the peak RSS by 134 MB at every exit here (``python -c "import
    torch"``: 2.0 s and 681 MB, against 1.4 s and 546 MB without them); a 10-minute encode
    and decode in one process peaked at 0.81 GB in its teardown, at 0.78 GB before it.
    Python's exit handlers (``atexit``: logging, temporary files, multiprocessing's
    children) still run, and the standard streams are flushed; every output file is closed
    and in place before :func:`main` returns. (``main`` itself raises SystemExit as usual,
    for callers that catch it.)"""
    import sys

    try:
        main()
    except SystemExit as exc:
        status = exc.code
        if "torch" not in sys.modules or not isinstance(status, (int, type(None))):
            raise
        import threading

        if threading.active_count() > 1:  # Python's shutdown joins them: let it
            raise
        import atexit
        import os

        atexit._run_exitfuncs()
        status = status or 0
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (| head): quietly, as click does
                status = status or 1
        os._exit(status)
