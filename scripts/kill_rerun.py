#!/usr/bin/env python3
"""Crash safety: SIGKILL a batch encode at random moments, rerun without -f, check the result.

Every round starts `tokpack encode -r IN --output-dir OUT -m test_24khz` and kills it with
SIGKILL after a random delay; after the rounds a last run completes the batch. Then every
output must verify with `tokpack decode -t`, no temporary may remain, and each output must
equal the one a clean run produces (so no partial file ever stood at an output name).

    python scripts/kill_rerun.py --rounds 20 --files 12
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_inputs(root: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = root / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        seconds = rng.uniform(1.0, 4.0)
        t = np.arange(int(24_000 * seconds)) / 24_000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t * (1 + t)) + 0.02 * rng.standard_normal(len(t))
        sf.write(sub / f"f{i:03d}.wav", x.astype(np.float32), 24_000, subtype="PCM_16")


def tokpack(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tokpack", *args], **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--max-delay", type=float, default=15.0, help="seconds before the kill, at most")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="tokpack-kill-"))
    try:
        src, out, ref = work / "in", work / "out", work / "ref"
        make_inputs(src, args.files, args.seed)
        common = ["-r", str(src), "-m", "test_24khz", "-q", "-T", "1"]
        tokpack("encode", *common, "--output-dir", str(ref)).wait()
        killed_with_outputs = 0
        for i in range(args.rounds):
            proc = tokpack("encode", *common, "--output-dir", str(out), "-j", str(args.jobs),
                           stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(rng.uniform(0.5, args.max_delay))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers too
            proc.wait()
            done = len(list(out.rglob("*.tpk"))) if out.exists() else 0
            killed_with_outputs += done < args.files
            print(f"round {i + 1:2d}: {done}/{args.files} outputs, exit {proc.returncode}")
        final = tokpack("encode", *common, "--output-dir", str(out)).wait()
        outputs = sorted(p.relative_to(out) for p in out.rglob("*.tpk"))
        expected = sorted(p.relative_to(ref) for p in ref.rglob("*.tpk"))
        temps = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        verify = subprocess.run([sys.executable, "-m", "tokpack", "decode", "-t", "-r", str(out), "-q"]).returncode
        differing = [p for p in outputs if (out / p).read_bytes() != (ref / p).read_bytes()]
        print(f"rounds killed mid-batch: {killed_with_outputs}/{args.rounds}; final run exit {final}")
        print(f"outputs {len(outputs)}/{len(expected)}, temporaries left {len(temps)}, "
              f"decode -t exit {verify}, differing from a clean run {len(differing)}")
        ok = final == 0 and outputs == expected and not temps and verify == 0 and not differing
        print("OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
