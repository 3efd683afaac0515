#!/usr/bin/env python3
"""Fuzz the container reader: only FormatError may escape, each call < 2 s and < 256 MB.

Mutates small valid containers of every layout (tests/fuzz/mutate.py: bit flips, byte runs,
truncation, insertion, deletion, header and chunk fields set to 0/max/random/±1 with and
without fixed-up CRCs, duplicated and swapped chunks, appended bytes) and feeds each case
to the strict reader (read_container) and to salvage. Memory is capped with RLIMIT_AS at
the current usage + 256 MB, so an allocation beyond that is a MemoryError, counted as
unexpected.

    python scripts/fuzz_container.py --cases 10000 [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import io
import random
import resource
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from mutate import mutate, seed_containers  # noqa: E402

from tokpack.errors import FormatError  # noqa: E402
from tokpack.formats import read_container  # noqa: E402
from tokpack.formats.salvage import salvage  # noqa: E402

TIME_LIMIT_S = 2.0
MEMORY_LIMIT = 256 * 2**20


def cap_memory() -> None:
    with open("/proc/self/statm") as f:
        vm_bytes = int(f.read().split()[0]) * resource.getpagesize()
    limit = vm_bytes + MEMORY_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seeds = seed_containers()
    names = sorted(seeds)
    rng = random.Random(args.seed)
    cap_memory()
    kinds = collections.Counter()
    outcomes = collections.Counter()
    unexpected = timeouts = 0
    slowest = 0.0
    for case in range(args.cases):
        name = names[case % len(names)]
        kind, data = mutate(seeds[name], rng)
        kinds[kind.split(":")[0]] += 1
        for read in (read_container, salvage):
            t0 = time.perf_counter()
            try:
                read(io.BytesIO(data))
                outcomes["accepted"] += 1
            except FormatError as exc:
                outcomes[type(exc).__name__] += 1
            except Exception:
                unexpected += 1
                print(f"case {case} ({name}, {kind}, {read.__name__}): unexpected", file=sys.stderr)
                traceback.print_exc()
            elapsed = time.perf_counter() - t0
            slowest = max(slowest, elapsed)
            if elapsed > TIME_LIMIT_S:
                timeouts += 1
                print(f"case {case} ({name}, {kind}, {read.__name__}): {elapsed:.2f} s", file=sys.stderr)
    print(f"{args.cases} cases x 2 readers over {len(seeds)} seed containers, seed {args.seed}")
    print("mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"slowest call {slowest * 1000:.1f} ms")
    print(f"{unexpected} unexpected exceptions, {timeouts} timeouts")
    return 1 if unexpected or timeouts else 0


if __name__ == "__main__":
    sys.exit(main())
