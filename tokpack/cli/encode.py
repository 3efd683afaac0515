"""tokpack encode: audio files -> .tpk token containers."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from typing import Annotated, Optional

import typer

from tokpack.batch import AUDIO_SUFFIXES, EncodeOptions, default_threads, encode_job, resolve_jobs
from tokpack.cli import batch_run
from tokpack.cli import options as opt
from tokpack.cli.output import make_messages, usage_error


def _model_rate(model: str) -> int:
    from tokpack.codec.registry import MODELS

    spec = MODELS.get(model)
    return 24_000 if spec is None else spec.sample_rate  # an unknown model fails in check()


class ChannelsMode(str, Enum):
    auto = "auto"
    split = "split"


class FileFormat(str, Enum):
    tpk = "tpk"
    ecdc = "ecdc"


class Entropy(str, Enum):
    auto = "auto"
    ctx = "ctx"
    zstd = "zstd"
    planes = "planes"
    pack = "pack"
    encodec_lm = "encodec-lm"


def encode_command(
    inputs: Annotated[
        list[str], typer.Argument(metavar="INPUT...", help="Audio files (WAV, FLAC, Ogg, AIFF, ...), directories with -r, or '-' for stdin.")
    ],
    output: opt.Output = None,
    stdout: opt.Stdout = False,
    output_dir: opt.OutputDir = None,
    recursive: opt.Recursive = False,
    model: opt.Model = "encodec_24khz",
    bandwidth: Annotated[
        Optional[float],
        typer.Option("--bandwidth", "-b", metavar="KBPS", help="Target bitrate in kbps (default: the model's, 6 for EnCodec)."),
    ] = None,
    channels: Annotated[
        ChannelsMode,
        typer.Option(
            "--channels",
            help="auto: mix to the model's channels; split: each channel its own stream (mono models).",
        ),
    ] = ChannelsMode.auto,
    file_format: Annotated[
        FileFormat,
        typer.Option(
            "--format",
            help="tpk, or EnCodec's own .ecdc (one stream; model rate and channels).",
        ),
    ] = FileFormat.tpk,
    entropy: Annotated[
        Entropy,
        typer.Option(
            "--entropy",
            "-e",
            help="Token coder: auto (the smallest per chunk), ctx, zstd, planes, pack; .ecdc: auto or encodec-lm.",
        ),
    ] = Entropy.auto,
    prior: Annotated[
        Optional[str],
        typer.Option(
            "--prior",
            metavar="FILE",
            help="CTX prior: a .tpp file, generic or uniform (default: the model's, else generic).",
        ),
    ] = None,
    keyframe: Annotated[
        Optional[float],
        typer.Option(
            "--keyframe",
            metavar="SECONDS",
            help="Restart the carried CTX models every SECONDS (default 60; 0: every chunk).",
        ),
    ] = None,
    live: opt.Live = False,
    packet: Annotated[
        int, typer.Option("--packet", metavar="MS", help="With --live: audio per packet, in whole frames.")
    ] = 40,
    raw: Annotated[
        bool, typer.Option("--raw", help="Input is raw 16-bit little-endian PCM.")
    ] = False,
    raw_rate: Annotated[
        Optional[int], typer.Option("--raw-rate", metavar="HZ", help="--raw input's rate (default: the model's).")
    ] = None,
    raw_channels: Annotated[
        int, typer.Option("--raw-channels", metavar="N", help="--raw input's channels.")
    ] = 1,
    force: opt.Force = False,
    weights: opt.Weights = None,
    lm_weights: opt.LmWeights = None,
    device: opt.DeviceOpt = opt.Device.cpu,
    threads: opt.Threads = None,
    jobs: opt.Jobs = 1,
    json_output: opt.Json = False,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Encode audio into .tpk token containers or .ecdc files (default: each INPUT with suffix .tpk or .ecdc)."""
    say = make_messages(quiet, verbose, debug)
    if (raw_rate is not None or raw_channels != 1) and not raw:
        raise usage_error("--raw-rate and --raw-channels describe a --raw input: add --raw")
    if live and (len(inputs) != 1 or recursive or jobs != 1):
        raise usage_error("--live encodes one input as it arrives: give one INPUT, without -r or -j")
    options = EncodeOptions(
        model=model, bandwidth=bandwidth, weights=None if weights is None else str(weights), device=device.value,
        channels=channels.value, force=force, container=file_format.value, coder=entropy.value, prior=prior,
        keyframe=keyframe,
        lm_weights=None if lm_weights is None else str(lm_weights), live=live, packet_ms=packet,
        raw_rate=(raw_rate or _model_rate(model)) if raw else None, raw_channels=raw_channels,
        estimate_prior_gain=verbose > 0 and not quiet,
    )
    batch_run.checked(options.check)
    planned = batch_run.plan(inputs, suffix=f".{file_format.value}", walk_suffixes=AUDIO_SUFFIXES, recursive=recursive,
                             output=output, output_dir=output_dir, stdout=stdout)
    batch_run.check_stdout(say, planned, json_output=json_output, force=force)
    options = replace(options, threads=default_threads(resolve_jobs(jobs, len(planned)), threads))
    batch_run.run(say, planned, encode_job, options, kind="encode", n_jobs=jobs, json_output=json_output,
                  progress=progress)
