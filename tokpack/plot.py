"""Rate-distortion curves of `tokpack bench` rows, drawn with matplotlib (``pip install
'tokpack[plot]'``; imported only when a plot is asked for)."""

from __future__ import annotations

import importlib.util
import math
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from tokpack._io import atomic_write
from tokpack.errors import TokpackError


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def curves(rows: Sequence) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per model, one point per bandwidth: (bandwidth kbps, mean actual kbps, mean SI-SDR dB,
    mean mel distance) over the inputs, sorted by bandwidth. Infinite SI-SDRs are left out
    of the mean (NaN if nothing is left); inputs with no duration are left out."""
    cells: dict[tuple[str, float], list] = defaultdict(list)
    for r in rows:
        if r.bitrate_bps is not None:
            cells[(r.model, r.bandwidth_kbps)].append(r)
    out: dict[str, list] = defaultdict(list)
    for (model, bw), rs in sorted(cells.items()):
        si = [r.metrics.si_sdr_db for r in rs if math.isfinite(r.metrics.si_sdr_db)]
        out[model].append((bw, float(np.mean([r.bitrate_bps for r in rs])) / 1000,
                           float(np.mean(si)) if si else math.nan,
                           float(np.mean([r.metrics.mel_distance for r in rs]))))
    return dict(out)


def _min_span(ax, span: float) -> None:
    """Nearly flat curves get at least ``span`` of y axis, not a zoom into rounding noise."""
    low, high = ax.get_ylim()
    if high - low < span:
        mid = (low + high) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def plot_rate_distortion(rows: Sequence, path: str | os.PathLike, *, title: str | None = None,
                         overwrite: bool = False) -> None:
    """Write a PNG: bitrate vs SI-SDR (left) and vs log-mel distance (right), a line per model
    (an existing ``path`` is an OutputError unless ``overwrite``).

    TokpackError when matplotlib is not installed.
    """
    if not has_matplotlib():
        raise TokpackError("--plot needs matplotlib: pip install 'tokpack[plot]'", path=os.fspath(path))
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for model, points in curves(rows).items():
        bws, kbps, si, mel = (list(v) for v in zip(*points))
        left.plot(kbps, si, marker="o", label=model)
        right.plot(kbps, mel, marker="o", label=model)
        for bw, x, y in zip(bws, kbps, si):
            if math.isfinite(y):
                left.annotate(f"{bw:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    left.set(xlabel="bitrate (kbps, container)", ylabel="SI-SDR (dB, higher is better)")
    right.set(xlabel="bitrate (kbps, container)", ylabel="log-mel distance (lower is better)")
    for ax, span in ((left, 1.0), (right, 0.05)):
        _min_span(ax, span)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(True, alpha=0.3)
        ax.legend(title="model")
    n = len({r.path for r in rows})
    fig.suptitle(title or f"tokpack bench: rate-distortion, mean over {n} input{'s' if n != 1 else ''}")
    with atomic_write(path, overwrite=overwrite) as f:
        fig.savefig(f, format="png", dpi=110)
