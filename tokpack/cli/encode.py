"""tokpack encode: audio file -> .tpk token container."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from tokpack.cli import options as opt
from tokpack.cli.output import human_bytes, make_messages
from tokpack.cli.paths import read_source, resolve_destination


class ChannelsMode(str, Enum):
    auto = "auto"
    split = "split"


def encode_command(
    input: Annotated[str, typer.Argument(metavar="INPUT", help="Audio file (WAV, FLAC, Ogg, AIFF, ...) or '-' for stdin.")],
    output: opt.Output = None,
    stdout: opt.Stdout = False,
    model: opt.Model = "encodec_24khz",
    bandwidth: Annotated[
        Optional[float],
        typer.Option("--bandwidth", "-b", metavar="KBPS", help="Target bitrate in kbps (default: the model's, 6 for EnCodec)."),
    ] = None,
    channels: Annotated[
        ChannelsMode,
        typer.Option(
            "--channels",
            help="auto: a mono model downmixes, a stereo model upmixes/folds; split: encode each channel as its own stream (mono models).",
        ),
    ] = ChannelsMode.auto,
    force: opt.Force = False,
    weights: opt.Weights = None,
    device: opt.DeviceOpt = opt.Device.cpu,
    threads: opt.Threads = None,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Encode audio into a .tpk token container (default: INPUT with suffix .tpk)."""
    say = make_messages(quiet, verbose, debug)

    def job():
        dest = resolve_destination(input, output, stdout, ".tpk", force=force)
        from tokpack.codec.engine import encode  # torch is imported only now

        result = encode(
            read_source(input),
            dest.target(),
            model=model,
            bandwidth=bandwidth,
            weights=weights,
            device=device.value,
            threads=threads,
            channels=channels.value,
        )
        return dest, result

    dest, result = say.run(input, job)
    ratio = result.bytes_out / result.bytes_in if result.bytes_in else 0.0
    say.info(
        f"{input if input != '-' else '<stdin>'} : {ratio:.2%} ({human_bytes(result.bytes_in)} => "
        f"{human_bytes(result.bytes_out)}, {result.bitrate_bps / 1000:.2f} kbps, {dest.name})"
    )
    say.verbose(
        f"  model {result.model} at {result.bandwidth_kbps:g} kbps ({result.n_codebooks} codebooks), "
        f"{result.duration_s:.3f} s of audio in {result.seconds:.2f} s"
    )
