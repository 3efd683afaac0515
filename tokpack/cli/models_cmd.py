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
    """List the codec models: sample rate, channels, frame rate, bandwidths (the default
    marked *), and where the weights come from (and whether they are here)."""
    rows = describe_models()
    if json_output:
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
        return
    lines = [f"{'model':<14} {'rate':>6} {'ch':>2} {'frames/s':>8}  {'kbps (* default)':<20} weights"]
    for row in rows:
        kbps = " ".join(format_kbps(b) + ("*" if b == row["default_bandwidth_kbps"] else "")
                        for b in row["bandwidths_kbps"])
        if row["weights"].startswith("test"):
            weights = "test model, " + ("built" if row["weights_here"] else "built on first use")
        else:
            weights = "official, " + ("cached" if row["weights_here"] else "not cached")
        lines.append(f"{row['model']:<14} {row['sample_rate'] // 1000:>4}k {row['channels']:>3} "
                     f"{row['frame_rate_hz']:>8g}  {kbps:<20} {weights}")
    sys.stdout.write("\n".join(lines) + "\n")
