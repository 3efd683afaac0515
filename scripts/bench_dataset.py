#!/usr/bin/env python3
"""Dataset throughput: `tokpack dataset encode` as whole processes, local vs Ray, CPU or GPU.

Times the command a user runs (start-up, model loads, workers, shards) on a folder of audio
and prints audio seconds per wall second for each engine, and Ray's start-up overhead (a
bare `ray.init()` + `ray.shutdown()` in a fresh process, and the Ray run's wall time over the
local run's). Each run writes a fresh output folder; runs alternate between engines and the
medians are reported.

    python scripts/bench_dataset.py                       # the corpus, local vs Ray, CPU
    python scripts/bench_dataset.py --copies 20           # the corpus's real audio x20 as well
    python scripts/bench_dataset.py --gpu                 # one GPU: --batch 1 vs 16, < 5 min

The corpus run includes its malformed files (they fail fast, as they would in a real crawl).
`--gpu` encodes `--gpu-minutes` of the corpus's real audio on `--device cuda` with `--batch 1`
and `--batch 16` (local engine, one worker) and checks that both give the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT / ".." / "shared" / "corpus").resolve()


def run(cmd: list[str], env: dict | None = None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr}")
    return wall, json.loads(out.stdout)


def encode(inputs: list[str], outdir: Path, *extra: str) -> tuple[float, dict]:
    shutil.rmtree(outdir, ignore_errors=True)
    return run([sys.executable, "-m", "tokpack", "dataset", "encode", *inputs, "-o", str(outdir),
                "--json", "-q", *extra])


def ray_startup() -> float:
    code = "import ray, logging; ray.init(include_dashboard=False, logging_level=logging.ERROR); ray.shutdown()"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def copies(root: Path, n: int) -> Path:
    """The corpus's real audio n times over (links under other names: other keys)."""
    for i in range(n):
        folder = root / f"copy{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for src in sorted((CORPUS / "real").glob("*.wav")):
            (folder / src.name).symlink_to(src)
    return root


def tokens_of(outdir: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from tokpack.dataset import iter_tokens

    return {key: tokens for key, tokens, _ in iter_tokens(outdir)}


def cpu(args, work: Path) -> dict:
    sets = {"corpus": [str(CORPUS)]}
    if args.copies:
        sets[f"real x{args.copies}"] = [str(copies(work / "in", args.copies))]
    report: dict = {"ray_init_shutdown_s": statistics.median(ray_startup() for _ in range(args.repeat))}
    for name, inputs in sets.items():
        walls: dict[str, list[float]] = {"local": [], "ray": []}
        last: dict[str, dict] = {}
        for _ in range(args.repeat):
            for engine in ("local", "ray"):
                wall, result = encode(inputs, work / f"out-{engine}", "-m", args.model,
                                      "--engine", engine, *args.extra)
                walls[engine].append(wall)
                last[engine] = result
        audio = last["local"]["audio_seconds"]
        same = tokens_of(work / "out-local").keys() == tokens_of(work / "out-ray").keys()
        row = {"audio_s": audio, "inputs": last["local"]["inputs"], "ok": last["local"]["ok"],
               "failed": last["local"]["failed"], "same_keys": same}
        for engine, values in walls.items():
            row[f"{engine}_wall_s"] = statistics.median(values)
            row[f"{engine}_x_real_time"] = audio / statistics.median(values)
        row["ray_over_local_s"] = row["ray_wall_s"] - row["local_wall_s"]
        report[name] = row
    return report


def gpu(args, work: Path) -> dict:
    inputs = copies(work / "gpu-in", max(1, int(args.gpu_minutes * 60 / 98)))  # ~98 s per copy
    report = {}
    for batch in (1, 16):
        wall, result = encode([str(inputs)], work / f"gpu-{batch}", "-m", args.model,
                              "--device", "cuda", "-j", "1", "--batch", str(batch), *args.extra)
        report[f"batch_{batch}"] = {"wall_s": wall, "audio_s": result["audio_seconds"],
                                    "x_real_time": result["audio_seconds"] / wall}
    a, b = tokens_of(work / "gpu-1"), tokens_of(work / "gpu-16")

    equal = sum(int((a[k] == b[k]).sum()) for k in a)
    total = sum(a[k].size for k in a)
    report["batched_codes_equal"] = equal / total if total else 1.0
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default="test_24khz")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--copies", type=int, default=0, help="also the corpus's real audio this many times over")
    p.add_argument("--gpu", action="store_true", help="the GPU run instead (--device cuda)")
    p.add_argument("--gpu-minutes", type=float, default=60.0, help="audio for the GPU run")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="more options for tokpack dataset encode (after --)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        report = gpu(args, work) if args.gpu else cpu(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["cores"] = os.cpu_count()
    if args.json:
        print(json.dumps(report))
        return
    for name, row in report.items():
        if isinstance(row, dict):
            print(f"{name}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in row.items()))
        else:
            print(f"{name}: {row:.3g}" if isinstance(row, float) else f"{name}: {row}")


if __name__ == "__main__":
    main()
