"""The typer application: global options and the command table."""

from __future__ import annotations

from typing import Annotated

import typer

from tokpack import __version__
from tokpack.cli.bench_cmd import bench_command
from tokpack.cli.compare_cmd import compare_command
from tokpack.cli.decode import decode_command
from tokpack.cli.encode import encode_command
from tokpack.cli.inspect_cmd import inspect_command
from tokpack.cli.train_prior import train_prior_command

app = typer.Typer(
    name="tokpack",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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


app.command("encode")(encode_command)
app.command("decode")(decode_command)
app.command("inspect")(inspect_command)
app.command("compare")(compare_command)
app.command("bench")(bench_command)
app.command("train-prior")(train_prior_command)


def main() -> None:
    app(prog_name="tokpack")
