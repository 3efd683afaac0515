"""tokpack decode: .tpk token container -> audio file."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from tokpack.cli import options as opt
from tokpack.cli.output import human_bytes, make_messages, usage_error
from tokpack.cli.paths import read_source, resolve_destination


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
    input: Annotated[str, typer.Argument(metavar="INPUT", help="A .tpk container or '-' for stdin.")],
    output: opt.Output = None,
    stdout: opt.Stdout = False,
    sample_rate: Annotated[
        str,
        typer.Option("--sample-rate", "-r", metavar="model|original|HZ", help="Output rate: the source's (default), the model's, or any rate in Hz."),
    ] = "original",
    subtype: Annotated[
        Subtype, typer.Option("--subtype", help="Sample format; FLOAT keeps peaks above full scale instead of clipping.")
    ] = Subtype.PCM_16,
    force: opt.Force = False,
    force_weights: Annotated[
        bool, typer.Option("--force-weights", help="Decode even if the weights differ from those used to encode.")
    ] = False,
    weights: opt.Weights = None,
    device: opt.DeviceOpt = opt.Device.cpu,
    threads: opt.Threads = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Decode a .tpk container to WAV, or FLAC by extension (default: INPUT with suffix .wav)."""
    say = make_messages(quiet, verbose, debug)
    rate = parse_sample_rate(sample_rate)

    def job():
        dest = resolve_destination(input, output, stdout, ".wav", force=force)
        from tokpack.codec.engine import decode  # torch is imported only now

        result = decode(
            read_source(input),
            dest.target(),
            sample_rate=rate,
            subtype=subtype.value,
            weights=weights,
            force_weights=force_weights,
            device=device.value,
            threads=threads,
        )
        return dest, result

    dest, result = say.run(input, job)
    if result.clipped_samples:
        say.warning(
            dest.name,
            f"{result.clipped_samples} samples clipped to full scale; use --subtype FLOAT to keep them",
        )
    say.info(
        f"{input if input != '-' else '<stdin>'} : {human_bytes(result.bytes_in)} => {human_bytes(result.bytes_out)} "
        f"({result.duration_s:.2f} s, {result.sample_rate} Hz, {result.channels} ch, {dest.name})"
    )
