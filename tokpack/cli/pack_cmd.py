"""tokpack pack / unpack: any codec's token arrays in a container and back (no model, no torch
unless a .pt file is read)."""

from __future__ import annotations

import io
import stat
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from tokpack.cli import options as opt
from tokpack.cli.output import EXIT_FAILED, human_bytes, make_messages, usage_error
from tokpack.errors import TokensError, TokpackError, UsageError

ARRAY_SUFFIXES = (".npy", ".pt")
DTYPES = ("uint8", "uint16", "uint32", "int16", "int32", "int64")


def read_array(name: str) -> np.ndarray:
    """The array in ``name``: a .npy file (or ``-``, .npy bytes on stdin; never pickles), or a
    .pt file of one tensor (torch.load with weights_only=True)."""
    if name == "-":
        data = io.BytesIO(sys.stdin.buffer.read())
    else:
        path = Path(name)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise TokensError("not a regular file", path=name)
        if path.suffix.lower() == ".pt":
            return _read_pt(path)
        data = path
    try:
        return np.load(data, allow_pickle=False)
    except (ValueError, OSError) as exc:  # not .npy, object arrays (pickles), cut short
        if isinstance(exc, FileNotFoundError):
            raise
        raise TokensError(f"not an .npy array: {' '.join(str(exc).split())[:200]}", path=name) from None


def _read_pt(path: Path) -> np.ndarray:
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors: not a plain tensor file
        raise TokensError(f"not a file of plain tensors: {' '.join(str(exc).split())[:120]}", path=str(path)) from None
    if not isinstance(value, torch.Tensor):
        raise TokensError(f"holds a {type(value).__name__}, not one tensor", path=str(path))
    return value.numpy()


def _destination(name: str, output: str | None, stdout: bool, suffix: str) -> str | None:
    """The output path, or None for stdout."""
    if stdout or output == "-":
        if output not in (None, "-"):
            raise usage_error("-c/--stdout and -o FILE are mutually exclusive")
        return None
    if output is not None:
        return output
    if name == "-":
        raise usage_error("reading from stdin: give -o FILE or -c to write to stdout")
    return str(Path(name).with_suffix(suffix))


def _write(say, dest: str | None, force: bool, write) -> int:
    """Run ``write(f)`` into ``dest`` through a temporary file (no overwrite without -f), or
    into stdout; returns the bytes written."""
    from tokpack._io import atomic_write

    if dest is None:
        if sys.stdout.isatty() and not force:
            say.error(None, "binary output to a terminal: redirect it, or use -f")
            raise typer.Exit(EXIT_FAILED)
        buffer = io.BytesIO()
        write(buffer)
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
        return len(buffer.getvalue())
    if Path(dest).exists() and not force:
        say.error(dest, "already exists (use -f to overwrite)")
        raise typer.Exit(EXIT_FAILED)
    with atomic_write(dest, overwrite=force) as f:
        write(f)
        return f.tell()


def pack_command(
    input: Annotated[str, typer.Argument(metavar="INPUT", help="An .npy array ('-' for stdin) or a .pt tensor.")],
    codebook_size: Annotated[int, typer.Option("--codebook-size", "-K", metavar="N",
                                               help="Codes per codebook: every token is below N.")],
    frame_rate: Annotated[float, typer.Option("--frame-rate", metavar="HZ", help="Token frames per second.")],
    output: opt.Output = None,
    stdout: opt.Stdout = False,
    codec: Annotated[str, typer.Option("--codec", metavar="NAME",
                                       help="The codec the tokens came from, recorded (snac, xcodec2, ...).")] = "tokens",
    sample_rate: Annotated[Optional[int], typer.Option(
        "--sample-rate", metavar="HZ", help="The codec's audio rate (recorded; the frame rate must divide it).")] = None,
    entropy: Annotated[str, typer.Option("--entropy", "-e", metavar="CODER",
                                         help="auto, ctx, zstd, planes or pack.")] = "auto",
    prior: Annotated[Optional[str], typer.Option(
        "--prior", metavar="FILE",
        help="CTX prior: a .tpp file, 'generic' (the default) or 'uniform'.")] = None,
    keyframe: Annotated[Optional[float], typer.Option(
        "--keyframe", metavar="SECONDS",
        help="Restart the carried CTX models every SECONDS (default 60; 0: every chunk).")] = None,
    force: opt.Force = False,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Store a [codebooks, frames] or [streams, codebooks, frames] integer array from any
    codec in a .tpk container, entropy-coded; `tokpack unpack` gives it back exactly."""
    from tokpack.formats import coding
    from tokpack.formats import tokens

    say = make_messages(quiet, verbose, debug)
    if entropy not in coding.CODER_CHOICES:
        raise usage_error(f"--entropy {entropy!r}: one of {', '.join(coding.CODER_CHOICES)}")
    try:
        tokens.check_options(codebook_size, frame_rate, sample_rate, codec)
        ctx_prior = _pack_prior(prior, codebook_size)
    except UsageError as exc:
        raise usage_error(exc.message) from None
    except TokpackError as exc:
        raise usage_error(f"--prior {prior}: {exc.message}") from None
    except OSError as exc:
        raise usage_error(f"--prior {prior}: {exc.strerror or exc}") from None
    if keyframe is not None and not keyframe >= 0:
        raise usage_error(f"--keyframe must be >= 0 seconds, got {keyframe}")
    if prior is not None and entropy not in ("auto", "ctx"):
        raise usage_error(f"--prior is for the CTX coder (-e auto or ctx), not -e {entropy}")
    dest = _destination(input, output, stdout, ".tpk")

    def run():
        array = read_array(input)
        result = None

        def write(f):
            nonlocal result
            result = tokens.pack(array, f, codebook_size=codebook_size, frame_rate=frame_rate,
                                 sample_rate=sample_rate, codec=codec, coder=entropy, prior=ctx_prior,
                                 keyframe=keyframe)

        written = _write(say, dest, force, write)
        packed = (result.tokens * result.header.bits_per_code + 7) // 8
        say.info(f"{input} : {written / max(packed, 1):.2%} of bit-packing ({result.tokens} tokens of "
                 f"{result.header.bits_per_code} bits, {human_bytes(packed)} => {human_bytes(written)}, "
                 f"{dest or '<stdout>'})")

    say.run(input, run)


def unpack_command(
    input: Annotated[str, typer.Argument(metavar="INPUT", help="A .tpk container ('-' for stdin).")],
    output: opt.Output = None,
    stdout: opt.Stdout = False,
    dtype: Annotated[Optional[str], typer.Option(
        "--dtype", metavar="TYPE",
        help="uint8, uint16, uint32, int16, int32 or int64 (default: the smallest unsigned type "
             "that holds the codebook size).")] = None,
    priors: opt.Priors = None,
    force: opt.Force = False,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Write the tokens of any container as an .npy array: the array a `tokpack pack`
    container was made from, else [codebooks, frames] ([streams, codebooks, frames] for
    several streams). No model and no torch needed."""
    from tokpack.formats import tokens

    say = make_messages(quiet, verbose, debug)
    if dtype is not None and dtype not in DTYPES:
        raise usage_error(f"--dtype {dtype!r}: one of {', '.join(DTYPES)}")
    dest = _destination(input, output, stdout, ".out.npy")  # never the array it was packed from

    def run():
        src = io.BytesIO(sys.stdin.buffer.read()) if input == "-" else input
        array = tokens.unpack(src, priors=priors or (), dtype=dtype)
        written = _write(say, dest, force, lambda f: np.save(f, array, allow_pickle=False))
        say.info(f"{input} : {'x'.join(map(str, array.shape))} {array.dtype} tokens "
                 f"({human_bytes(written)}, {dest or '<stdout>'})")

    say.run(input, run)


def _pack_prior(choice: str | None, codebook_size: int):
    """--prior of pack: None for the generic prior (tokens.pack's default), the built-in
    uniform one (the same for any number of codebooks), or a .tpp file."""
    from tokpack.formats import prior as prior_files
    from tokpack.formats import spec

    if choice in (None, "generic"):
        return None
    if choice == "uniform":
        return prior_files.uniform_prior(codebook_size, spec.MAX_CODEBOOKS)
    return prior_files.load(choice)
