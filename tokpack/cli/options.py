"""CLI options shared by several commands, defined once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tokpack.codec.registry import MODELS


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


Output = Annotated[
    Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Output file ('-' for stdout).")
]
Stdout = Annotated[bool, typer.Option("--stdout", "-c", help="Write to stdout.")]
Force = Annotated[
    bool,
    typer.Option("--force", "-f", help="Overwrite existing output; allow binary output to a terminal."),
]
Model = Annotated[
    str,
    typer.Option("--model", "-m", metavar="NAME",
                 help=f"Codec model: {', '.join(MODELS)} (tokpack models lists them)."),
]
Weights = Annotated[
    Optional[Path],
    typer.Option(
        "--weights",
        metavar="PATH",
        help="Weights instead of the official ones (also TOKPACK_WEIGHTS): a checkpoint, "
             "a model.safetensors or its folder.",
    ),
]
LmWeights = Annotated[
    Optional[Path],
    typer.Option(
        "--lm-weights",
        metavar="PATH",
        help="EnCodec LM checkpoint for LM-coded tokens (also TOKPACK_LM_WEIGHTS).",
        dir_okay=False,
    ),
]
Priors = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--prior",
        metavar="FILE",
        help="A .tpp prior that CTX-coded containers may name (repeatable; also: the directories of TOKPACK_PRIOR_PATH).",
        dir_okay=False,
    ),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the model runs.")]
Threads = Annotated[
    Optional[int],
    typer.Option("--threads", "-T", min=1, metavar="N", help="Torch threads (codes can differ slightly between thread counts)."),
]
Quiet = Annotated[int, typer.Option("--quiet", "-q", count=True, help="Say less (errors only).")]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="Say more.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks (also: TOKPACK_DEBUG=1).")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into directories.")]
OutputDir = Annotated[
    Optional[str],
    typer.Option("--output-dir", metavar="DIR", help="Write outputs below DIR, mirroring the input tree."),
]
Jobs = Annotated[
    int, typer.Option("--jobs", "-j", min=0, metavar="N", help="Files in parallel (worker processes; 0 = one per core).")
]
Json = Annotated[bool, typer.Option("--json", help="One NDJSON object per input on stdout.")]
ProgressOpt = Annotated[
    Optional[bool],
    typer.Option("--progress/--no-progress", help="Progress bar on stderr (default: only on a terminal)."),
]
MaxKbps = Annotated[
    Optional[float],
    typer.Option("--max-kbps", metavar="X", help="Exit 1, naming it, if an actual bitrate exceeds X kbps."),
]

Live = Annotated[
    bool,
    typer.Option("--live", help="Work as data arrives (causal models)."),
]
