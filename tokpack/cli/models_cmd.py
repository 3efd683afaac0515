"""tokpack models: the codec models tokpack knows (never imports torch)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from tokpack.codec.registry import format_kbps
from tokpack.codec.weights import describe_models


def models_command(
    json_output: Annotated[bool, typer.Option("--json", help="One NDJSON object per model on stdout.")] = False,
) -> None:
    """List the codec models: family, sample rate, channels, frame rate, codebook size,
    bandwidths with their number of codebooks (the default marked *), where the weights
    come from (and whether they are here), and the extra a family needs."""
    rows = describe_models()
    if json_output:
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
        return
    lines = [f"{'model':<15} {'family':<8} {'rate':>6} {'ch':>2} {'frames/s':>8} {'codes':>5}  "
             f"{'kbps (codebooks; * default)':<34} weights"]
    for row in rows:
        kbps = " ".join(f"{format_kbps(b)}({n}){'*' if b == row['default_bandwidth_kbps'] else ''}"
                        for b, n in zip(row["bandwidths_kbps"], row["codebooks"]))
        if row["weights"].startswith("test"):
            weights = "test model, " + ("built" if row["weights_here"] else "built on first use")
        else:
            weights = "official, " + ("cached" if row["weights_here"] else "not cached")
        if not row["extra_installed"]:
            weights += f"; needs pip install 'tokpack[{row['extra']}]'"
        lines.append(f"{row['model']:<15} {row['family']:<8} {row['sample_rate'] / 1000:>5g}k "
                     f"{row['channels']:>2} {row['frame_rate_hz']:>8.4g} {row['codebook_size']:>5}  "
                     f"{kbps:<34} {weights}")
    sys.stdout.write("\n".join(lines) + "\n")
