"""tokpack dataset encode: a corpus -> Parquet or WebDataset shards (tokpack.dataset)."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from enum import Enum
from typing import Annotated, Optional

import typer

from tokpack.cli import options as opt
from tokpack.cli.batch_run import checked
from tokpack.cli.command import Command
from tokpack.cli.encode import ChannelsMode, Entropy
from tokpack.cli.output import EXIT_FAILED, human_bytes, make_messages, usage_error
from tokpack.cli.report import interrupted, show_progress

dataset_app = typer.Typer(
    name="dataset",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 80},
    help="Tokenize a corpus into Parquet or WebDataset shards (local workers or Ray).",
)


class ShardFormat(str, Enum):
    parquet = "parquet"
    webdataset = "webdataset"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``256M`` -> bytes (K, M, G: binary units, as zstd's and split's)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise usage_error(f"--shard-bytes {text}: not a size (e.g. 256M)") from None
    if value <= 0:
        raise usage_error(f"--shard-bytes {text}: must be positive")
    return int(value * _UNITS[unit])


def dataset_encode_command(
    inputs: Annotated[
        list[str], typer.Argument(metavar="INPUT...", help="Audio files, directories (walked), or manifests (.txt, .csv, .tsv, .jsonl).")
    ],
    output_dir: Annotated[str, typer.Option("--output-dir", "-o", metavar="OUTDIR", help="The dataset folder (made if missing; a rerun resumes).")],
    shard_format: Annotated[ShardFormat, typer.Option("--format", help="Shard format.")] = ShardFormat.parquet,
    engine: Annotated[Engine, typer.Option("--engine", help="local: worker processes here; ray: Ray Data (pip install 'tokpack[ray]').")] = Engine.local,
    address: Annotated[
        Optional[str], typer.Option("--address", metavar="ADDR", help="Ray cluster to join (also RAY_ADDRESS; default: start one here).")
    ] = None,
    model: opt.Model = "encodec_24khz",
    bandwidth: Annotated[
        Optional[float], typer.Option("--bandwidth", "-b", metavar="KBPS", help="Target bitrate in kbps (default: the model's).")
    ] = None,
    channels: Annotated[
        ChannelsMode, typer.Option("--channels", help="auto: mix to the model's channels; split: each channel its own stream.")
    ] = ChannelsMode.auto,
    entropy: Annotated[Entropy, typer.Option("--entropy", "-e", help="Token coder: auto, ctx, zstd, planes, pack.")] = Entropy.auto,
    prior: Annotated[
        Optional[str], typer.Option("--prior", metavar="FILE", help="CTX prior: a .tpp file, 'generic' or 'uniform'.")
    ] = None,
    weights: opt.Weights = None,
    device: opt.DeviceOpt = opt.Device.cpu,
    threads: Annotated[
        Optional[int], typer.Option("--threads", "-T", min=1, metavar="N", help="Torch threads per worker (default 1).")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, metavar="N", help="Workers or Ray actors (0: one per core, or per GPU).")
    ] = 0,
    batch: Annotated[
        int, typer.Option("--batch", min=1, metavar="N", help="Inputs per forward pass (for GPUs; exact either way).")
    ] = 1,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, metavar="ROWS", help="Rows per shard at most.")] = 1000,
    shard_bytes: Annotated[str, typer.Option("--shard-bytes", metavar="SIZE", help="Bytes per shard, about (K, M, G).")] = "256M",
    json_output: Annotated[bool, typer.Option("--json", help="The run's counts as one JSON object on stdout.")] = False,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Encode every INPUT into shards in OUTDIR; a rerun encodes only what is not done."""
    from tokpack.batch import Fatal, Terminated
    from tokpack.dataset import encode_dataset

    say = make_messages(quiet, verbose, debug)
    if entropy is Entropy.encodec_lm:
        raise usage_error("--entropy encodec-lm is for .ecdc files: shards hold .tpk containers")
    size = parse_size(shard_bytes)
    shown = show_progress(progress, quiet=say.verbosity < 0, stderr_is_tty=sys.stderr.isatty())
    bar = _Bar(shown)

    def on_row(row: dict) -> None:
        if row["status"] == "ok":
            say.verbose(f"{row['source']} : {human_bytes(row['bytes'])}, {row['duration_s']:.2f} s")
        else:
            say.error(row["source"], row["error"])
        bar.advance(row)

    def run():
        with bar:
            try:
                return encode_dataset(
                    inputs, output_dir, model=model, bandwidth=bandwidth,
                    weights=None if weights is None else str(weights), channels=channels.value,
                    coder=entropy.value, prior=prior, device=device.value, threads=threads,
                    format=shard_format.value, engine=engine.value, address=address, jobs=jobs,
                    batch=batch, shard_rows=shard_size, shard_bytes=size, on_row=on_row,
                    on_start=bar.start,
                )
            except Fatal as exc:  # e.g. the model cannot be loaded: said once
                say.error(exc.path, exc.message)
                raise typer.Exit(EXIT_FAILED) from None

    try:
        result = say.run(output_dir, lambda: checked(run))
    except Terminated as exc:
        raise interrupted(exc) from None
    if json_output:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    rate = result.audio_seconds / result.seconds if result.seconds else 0.0
    say.info(f"tokpack: {result.outdir}: {result.ok} ok, {result.failed} failed, "
             f"{result.already_ok} already done; {result.audio_seconds / 3600:.2f} h of audio in "
             f"{result.seconds:.1f} s ({rate:.1f}x real time), {result.shards_written} shards, "
             f"{human_bytes(result.bytes)}")
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


class _Bar:
    """Files, audio hours, real-time rate and ETA on stderr, on a terminal only."""

    def __init__(self, shown: bool) -> None:
        self.progress = None
        self.context = nullcontext()
        if shown:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("dataset"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[hours]:.2f} h of audio, {task.fields[rate]:.1f}x real time"),
                TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=True,
            )
            self.context = self.progress
            self.task = None

    def __enter__(self):
        self.context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.context.__exit__(*exc)

    def start(self, todo: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("dataset", total=todo, hours=0.0, rate=0.0)

    def advance(self, row: dict) -> None:
        if self.progress is None or self.task is None:
            return
        task = self.progress.tasks[0]
        seconds = task.fields["hours"] * 3600 + (row["duration_s"] or 0.0)
        elapsed = task.elapsed or 0.0
        self.progress.update(self.task, advance=1, hours=seconds / 3600,
                             rate=seconds / elapsed if elapsed else 0.0)


dataset_app.command("encode", cls=Command, short_help="Audio -> Parquet or WebDataset shards, resumable.")(
    dataset_encode_command)
