"""tokpack train-prior: a CTX prior (.tpp) trained on a set of audio files or containers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tokpack.batch import check_model
from tokpack.cli import batch_run
from tokpack.cli import options as opt
from tokpack.cli.output import EXIT_FAILED, make_messages, usage_error


def _inputs(paths: list[str]) -> list[Path]:
    """Files as given; directories walked (sorted) for audio files and .tpk containers."""
    from tokpack.batch import AUDIO_SUFFIXES, _walk

    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(_walk(path, AUDIO_SUFFIXES | {".tpk"}))
        else:
            found.append(path)
    return found


def train_prior_command(
    inputs: Annotated[list[str], typer.Argument(
        metavar="INPUT...", help="Audio files, .tpk containers, or directories of them (walked).")],
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="FILE", help="The prior file to write (.tpp).")],
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="NAME",
        help="Codec model (default: the model of the .tpk inputs; needed for audio).")] = None,
    neighbours: Annotated[int, typer.Option(
        "--neighbours", min=0, max=64, metavar="M",
        help="Codes listed per code for the previous-frame model (0: order-0 only).")] = 32,
    force: opt.Force = False,
    weights: opt.Weights = None,
    threads: opt.Threads = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    quiet: opt.Quiet = 0,
    verbose: opt.Verbose = 0,
    debug: opt.Debug = False,
) -> None:
    """Train a CTX entropy-coder prior on INPUT... (speech, music, your dataset) and write it
    to FILE. Encode with `--prior FILE`; decoding needs the same file (`--prior FILE`, or a
    directory of $TOKPACK_PRIOR_PATH): containers name it by its SHA-256."""
    from tokpack.codec.priors import train_prior

    say = make_messages(quiet, verbose, debug)
    files = _inputs(inputs)
    if not files:
        raise usage_error("no audio files or containers found in the inputs")
    if output == "-":
        raise usage_error("train-prior writes a file: give -o FILE.tpp")
    if model is not None:
        batch_run.checked(check_model, model)
    if Path(output).exists() and not force:  # as encode's single output: exit 1
        say.error(output, "already exists (use -f to overwrite)")
        raise typer.Exit(EXIT_FAILED)
    result = say.run(output, lambda: train_prior(files, output, model=model, weights=weights,
                                                 threads=threads, n_neighbours=neighbours,
                                                 overwrite=force))
    report = result.report
    n = report.n_tokens
    held = sum(report.heldout_bits) / len(report.heldout_bits)
    uniform = sum(report.uniform_bits) / len(report.uniform_bits)
    if json_output:
        sys.stdout.write(json.dumps({
            "output": result.output, "sha256": result.sha256, "model": result.model_id,
            "files": result.files, "audio_seconds": result.seconds, "tokens": n,
            "folds": report.folds, "strength": report.strength, "mix": report.mix,
            "heldout_bits_per_token": report.heldout_bits,
            "uniform_bits_per_token": report.uniform_bits,
        }) + "\n")
        return
    say.info(f"{result.output}: prior for {result.model_id} from {result.files} file(s), "
             f"{result.seconds:.1f} s of audio, {n} tokens, sha256 {result.sha256}")
    say.info(f"  held-out cost ({report.folds} folds): {held:.3f} bits/token on average over "
             f"{len(report.mix)} codebooks (uniform prior: {uniform:.3f}); "
             f"neighbour model in {sum(1 for m in report.mix if m)} codebook(s)")
