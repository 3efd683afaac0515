"""tokpack decode: .tpk token containers -> audio files (or -t: verify them)."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from typing import Annotated

import typer

from tokpack.batch import CONTAINER_SUFFIXES, DECODED_SUFFIX, DecodeOptions, default_threads, decode_job, resolve_jobs, verify_job
from tokpack.cli import batch_run
from tokpack.cli import options as opt
from tokpack.cli.output import make_messages, usage_error


class Subtype(str, Enum):
    PCM_16 = "PCM_16"
    PCM_24 = "PCM_24"
    FLOAT = "FLOAT"


def parse_sample_rate(value: str) -> str | int:
    if value in ("original", "model"):
        return value
    if value.isdigit() and 0 < int(value) <= 768_000:
        return int(value)
    raise usage_error(f"--sample-rate: expected 'original', 'model' or a rate in Hz, got {value!r}")


def decode_command(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help=".tpk containers or EnCodec .ecdc files, directories with -r, or '-' for stdin.")],
    output: opt.Output = None,
    stdout: opt.Stdout = False,
    output_dir: opt.OutputDir = None,
    recursive: opt.Recursive = False,
    test: Annotated[
        bool, typer.Option("--test", "-t", help="Verify every checksum and that the tokens decode; write nothing.")
    ] = False,
    sample_rate: Annotated[
        str,
        typer.Option("--sample-rate", metavar="model|original|HZ", help="Output rate: the source's (default), the model's, or any rate in Hz."),
    ] = "original",
    subtype: Annotated[
        Subtype, typer.Option("--subtype", help="Sample format; FLOAT keeps peaks above full scale instead of clipping.")
    ] = Subtype.PCM_16,
    force: opt.Force = False,
    force_weights: Annotated[
        bool, typer.Option("--force-weights", help="Decode even if the weights differ from those used to encode.")
    ] = False,
    salvage: Annotated[
        bool, typer.Option("--salvage", help="Write what is intact: silence where chunks are lost; report the losses.")
    ] = False,
    live: opt.Live = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="Write headerless little-endian samples (16-bit by default, see --subtype), as aplay -t raw, sox -t raw, ffmpeg -f s16le read.")
    ] = False,
    weights: opt.Weights = None,
    lm_weights: opt.LmWeights = None,
    prior: opt.Priors = None,
    device: opt.DeviceOpt = opt.Device.cpu,
    threads: opt.Threads = None,
    jobs: opt.Jobs = 1,
    json_output: opt.Json = False,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Decode .tpk containers (or EnCodec .ecdc files) to WAV, or FLAC by extension (default: INPUT with suffix .out.wav, which is never the source)."""
    say = make_messages(quiet, verbose, debug)
    rate = parse_sample_rate(sample_rate)
    if test and salvage:
        raise usage_error("-t/--test writes nothing and --salvage writes what is intact: give one of them")
    if live and (len(inputs) != 1 or recursive or jobs != 1 or test or salvage):
        raise usage_error("--live decodes one input as it arrives: give one INPUT, without -r, -j, -t or --salvage")
    options = DecodeOptions(
        sample_rate=rate, subtype=subtype.value, weights=None if weights is None else str(weights),
        force_weights=force_weights, salvage=salvage, device=device.value, force=force,
        lm_weights=None if lm_weights is None else str(lm_weights),
        priors=tuple(str(p) for p in prior or ()), live=live, raw=raw,
    )
    batch_run.checked(options.check)
    planned = batch_run.plan(inputs, suffix=".out.raw" if raw else DECODED_SUFFIX, walk_suffixes=CONTAINER_SUFFIXES, recursive=recursive,
                             output=output, output_dir=output_dir, stdout=stdout, test=test)
    batch_run.check_stdout(say, planned, json_output=json_output, force=force, test=test)
    options = replace(options, threads=default_threads(resolve_jobs(jobs, len(planned)), threads))
    if test:
        batch_run.run(say, planned, verify_job, options, kind="verify", n_jobs=1, json_output=json_output,
                      progress=progress)
        return
    batch_run.run(say, planned, decode_job, options, kind="decode", n_jobs=jobs, json_output=json_output,
                  progress=progress)
