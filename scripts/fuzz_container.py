#!/usr/bin/env python3
"""Fuzz the container reader: only FormatError may escape, each call < 2 s, memory capped.

Two kinds of cases (tests/fuzz/mutate.py):

- mutated: small valid containers of every layout, damaged at random (bit flips, byte
  runs, truncation, insertion, deletion, header and chunk fields set to 0/max/random/±1
  with and without fixed-up CRCs, duplicated and swapped chunks, appended bytes);
- crafted (``--crafted-share`` of the cases): hostile files whose CRCs are all valid, in
  five families: ``lengths`` (source_frames / model_samples claims of 2^48, 2^31, ... in
  the header and END), ``channels`` (1024 source channels at 768 kHz, 64 SPLIT streams,
  ...), ``symbols`` (headers over 2^21 tokens a chunk, zstd frames declaring huge sizes,
  constant-token zstd chunks at the limit, CTX chunks of a few bytes claiming many frames),
  ``optional`` (optional chunks of 16 MiB and just above) and ``ecdc`` (EnCodec .ecdc files
  with metadata nested ~60,000 deep, malformed metadata, ``al`` claims of 2^48).

.tpk cases go to the strict reader (read_container) and to salvage; only FormatError may
escape. .ecdc cases go to read_ecdc_info and through an EcdcReader (every chunk); only
TokpackError may escape (an LM-coded test-model file loads the test LM). Anything else is
counted as unexpected, with its traceback and a command that reruns the case alone.

Limits: a call taking over --time-limit (2 s) is a timeout; one still running at
--hard-limit is interrupted (SIGALRM) and counted as a timeout too. Memory is capped with
RLIMIT_AS at the usage after start-up + --memory-mb (default 384 MB: the reader's 256 MB
plus room for the crafted inputs of up to ~40 MB, which the fuzzer holds and salvage
copies), so an allocation beyond that is a MemoryError, counted as unexpected.

Every case has its own random.Random, seeded from --seed and the case number, so
``--case N`` (with the same --seed, --crafted-share and --families) reruns case N alone.
Per case the time of each call and the RSS are measured (the kernel's peak RSS, VmHWM, is
reset before each case through /proc/self/clear_refs, so the peak is the case's own); -v
prints them for every case. The summary gives, per family, the worst time and RSS.

    python scripts/fuzz_container.py --cases 10000 [--seed 0] [--crafted-share 0.3]
    python scripts/fuzz_container.py --cases 200 --crafted-share 1 --families symbols,ecdc -v
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import io
import random
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from mutate import CRAFTED_FAMILIES, crafted, mutate, seed_containers  # noqa: E402

from tokpack.errors import FormatError, TokpackError  # noqa: E402
from tokpack.formats import read_container  # noqa: E402
from tokpack.formats.salvage import salvage  # noqa: E402

TIME_LIMIT_S = 2.0
HARD_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 384
MB = 2**20


class Interrupted(BaseException):
    """Raised by SIGALRM in a call that ran past --hard-limit (BaseException, so that no
    ``except Exception`` in the code under test swallows it)."""


def _alarm(signum, frame):
    raise Interrupted()


def cap_memory(headroom: int) -> int:
    with open("/proc/self/statm") as f:
        vm_bytes = int(f.read().split()[0]) * resource.getpagesize()
    limit = vm_bytes + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


class Rss:
    """Per-case RSS: VmRSS now and the peak (VmHWM) since the last reset(). Where
    /proc/self/clear_refs cannot be written, the peak is ru_maxrss (never reset)."""

    def __init__(self) -> None:
        try:
            self.reset()
            self.resettable = True
        except OSError:
            self.resettable = False

    def reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS

    @staticmethod
    def trim() -> None:
        """Hand freed heap memory back to the system (glibc keeps freed buffers of up to
        32 MB in the heap), so that the next case starts from what is really in use."""
        if _LIBC is not None:
            _LIBC.malloc_trim(0)

    def read(self) -> tuple[int, int]:
        """(rss, peak) in bytes."""
        rss = peak = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        if not self.resettable:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return rss, peak


try:
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim  # noqa: B018  (glibc only)
except (OSError, AttributeError):
    _LIBC = None


# readers: (name, call, the exceptions that may escape)
def read_ecdc_info(f):
    from tokpack.codecs.encodec.ecdc import read_ecdc_info as read

    return read(f)


def iterate_ecdc(f):
    """Every chunk of an EcdcReader. An LM-coded file whose LM is not at hand (an official
    model's, not cached) is skipped: reading it would download the LM."""
    from tokpack.codecs.encodec.ecdc import EcdcReader
    from tokpack.codecs.encodec.lm import lm_available

    info = read_ecdc_info(io.BytesIO(f.getvalue()))
    if info.use_lm and (NO_LM or not lm_available(info.spec)):
        return "skipped (LM)"
    with EcdcReader(f) as reader:
        for _ in reader:
            pass
    return None


NO_LM = False
TPK_READERS = (("read_container", read_container, FormatError), ("salvage", salvage, FormatError))
ECDC_READERS = (("read_ecdc_info", read_ecdc_info, TokpackError), ("EcdcReader", iterate_ecdc, TokpackError))


@dataclass
class FamilyStats:
    cases: int = 0
    variants: collections.Counter = field(default_factory=collections.Counter)
    outcomes: collections.Counter = field(default_factory=collections.Counter)  # (reader, outcome)
    worst_time: float = 0.0
    worst_time_at: str = ""
    variant_time: dict = field(default_factory=dict)  # variant -> worst seconds of a call
    worst_peak: int = 0  # highest VmHWM during a case (bytes)
    worst_peak_at: str = ""
    worst_growth: int = 0  # largest peak above the RSS at the start of the case (input held)
    worst_growth_at: str = ""
    worst_retained: int = 0  # largest RSS still held after the case, above its start
    largest_input: int = 0
    unexpected: int = 0
    timeouts: int = 0


def make_case(case: int, args, seeds: dict[str, bytes], names: list[str]) -> tuple[str, str, bytes]:
    """(family, kind, bytes) of case ``case``: a pure function of the arguments."""
    rng = random.Random(f"{args.seed}:{case}")
    if rng.random() < args.crafted_share:
        kind, data = crafted(rng, rng.choice(args.families))
        return kind.split(":")[0], kind, data
    name = names[case % len(names)]
    kind, data = mutate(seeds[name], rng)
    return "mutated", f"{kind}:{name}", data


def run_call(call, data: bytes, hard_limit: float):
    """(outcome, exception or None, elapsed) of one reader call on ``data``."""
    signal.setitimer(signal.ITIMER_REAL, hard_limit)
    t0 = time.perf_counter()
    try:
        result = call(io.BytesIO(data))
        outcome, error = (result if isinstance(result, str) else "accepted"), None
    except BaseException as exc:  # sorted by the caller
        outcome, error = type(exc).__name__, exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return outcome, error, time.perf_counter() - t0


def warm_up(args) -> None:
    """Imports and one-time loads before memory is capped and time is measured: encodec
    (torch) for .ecdc cases, and the test models' LM when LM-coded cases can come up."""
    if "ecdc" not in args.families or args.crafted_share <= 0:
        return
    import encodec.binary  # noqa: F401  (imports torch)

    if not NO_LM:
        from tokpack.codecs.encodec.lm import load_lm

        for model in ("test_24khz", "test_48khz"):
            load_lm(model)


def main() -> int:
    global NO_LM
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crafted-share", type=float, default=0.3,
                    help="fraction of the cases that are crafted (default 0.3)")
    ap.add_argument("--families", default=",".join(CRAFTED_FAMILIES),
                    help=f"crafted families to draw from (default: all of {','.join(CRAFTED_FAMILIES)})")
    ap.add_argument("--case", type=int, default=None, help="run this case alone (verbose)")
    ap.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds a call may take")
    ap.add_argument("--hard-limit", type=float, default=HARD_LIMIT_S,
                    help="seconds after which a call is interrupted (counted as a timeout)")
    ap.add_argument("--memory-mb", type=int, default=MEMORY_LIMIT_MB,
                    help="RLIMIT_AS headroom above the usage after start-up")
    ap.add_argument("--no-lm", action="store_true", help="skip LM-coded .ecdc files (no LM load)")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = ap.parse_args()
    args.families = [f for f in args.families.split(",") if f]
    unknown = set(args.families) - set(CRAFTED_FAMILIES)
    if unknown or not args.families:
        ap.error(f"--families: choose from {', '.join(CRAFTED_FAMILIES)}")
    NO_LM = args.no_lm
    seeds = seed_containers()
    names = sorted(seeds)
    cases = range(args.cases) if args.case is None else [args.case]
    verbose = args.verbose or args.case is not None
    warm_up(args)
    signal.signal(signal.SIGALRM, _alarm)
    limit = cap_memory(args.memory_mb * MB)
    rss = Rss()
    start_rss, _ = rss.read()
    overall_peak = 0
    stats: dict[str, FamilyStats] = collections.defaultdict(FamilyStats)
    rerun = (f"{sys.executable} {sys.argv[0]} --seed {args.seed} --crafted-share {args.crafted_share} "
             f"--families {','.join(args.families)}")
    t_start = time.perf_counter()
    for case in cases:
        base, _ = rss.read()  # before the case's input exists
        family, kind, data = make_case(case, args, seeds, names)
        st = stats[family]
        st.cases += 1
        variant = kind.split(":")[1] if family != "mutated" else kind.split(":")[0]
        st.variants[variant] += 1
        st.largest_input = max(st.largest_input, len(data))
        readers = ECDC_READERS if family == "ecdc" else TPK_READERS
        where = f"case {case} ({kind}, {len(data)} bytes)"
        if rss.resettable:
            rss.reset()
        before, _ = rss.read()  # the input held
        times = []
        for reader, call, allowed in readers:
            outcome, error, elapsed = run_call(call, data, args.hard_limit)
            times.append((reader, elapsed, outcome))
            st.outcomes[(reader, outcome)] += 1
            st.variant_time[variant] = max(st.variant_time.get(variant, 0.0), elapsed)
            if elapsed > st.worst_time:
                st.worst_time, st.worst_time_at = elapsed, f"{reader}, {where}"
            if isinstance(error, Interrupted):
                st.timeouts += 1
                print(f"{where}, {reader}: interrupted after {elapsed:.2f} s\n  rerun: {rerun} --case {case}",
                      file=sys.stderr)
            elif elapsed > args.time_limit:
                st.timeouts += 1
                print(f"{where}, {reader}: {elapsed:.2f} s (limit {args.time_limit} s), {outcome}\n"
                      f"  rerun: {rerun} --case {case}", file=sys.stderr)
            if error is not None and not isinstance(error, (allowed, Interrupted)):
                st.unexpected += 1
                print(f"{where}, {reader}: unexpected {type(error).__name__}\n  rerun: {rerun} --case {case}",
                      file=sys.stderr)
                traceback.print_exception(error, file=sys.stderr)
            if error is not None:  # the traceback's frames hold the input: free it now, not at a GC
                traceback.clear_frames(error.__traceback__)
            del error
        data_size = len(data)
        del data
        if data_size > MB:
            gc.collect()
        rss.trim()
        after, peak = rss.read()
        overall_peak = max(overall_peak, peak)
        if peak > st.worst_peak:
            st.worst_peak, st.worst_peak_at = peak, where
        if peak - before > st.worst_growth:
            st.worst_growth, st.worst_growth_at = peak - before, where
        st.worst_retained = max(st.worst_retained, after - base)
        if verbose:
            calls = ", ".join(f"{r} {t * 1000:.1f} ms {o}" for r, t, o in times)
            print(f"case {case} {kind} {data_size} B: {calls}; rss {after / MB:.1f} MB, "
                  f"peak {peak / MB:.1f} MB (+{(peak - before) / MB:.1f})", flush=True)
    wall = time.perf_counter() - t_start

    n_crafted = sum(s.cases for f, s in stats.items() if f != "mutated")
    n_mutated = stats["mutated"].cases if "mutated" in stats else 0
    print(f"{len(cases)} cases ({n_mutated} mutated over {len(seeds)} seed containers, {n_crafted} crafted: "
          f"share {args.crafted_share}, families {','.join(args.families)}), seed {args.seed}, "
          f"{wall:.0f} s")
    print(f"memory cap RLIMIT_AS {limit / MB:.0f} MB (start-up usage + {args.memory_mb} MB); "
          f"RSS at start {start_rss / MB:.1f} MB")
    order = ["mutated", *[f for f in CRAFTED_FAMILIES if f in stats]]
    for family in order:
        if family not in stats:
            continue
        st = stats[family]
        print(f"\n[{family}] {st.cases} cases, largest input {st.largest_input:,} bytes")
        print("  variants: " + ", ".join(f"{k} {v}" for k, v in sorted(st.variants.items())))
        by_reader = collections.defaultdict(list)
        for (reader, outcome), n in sorted(st.outcomes.items()):
            by_reader[reader].append(f"{outcome} {n}")
        for reader, parts in by_reader.items():
            print(f"  {reader}: " + ", ".join(parts))
        print(f"  worst time {st.worst_time * 1000:.1f} ms ({st.worst_time_at})")
        print("  worst time by variant: " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in sorted(st.variant_time.items())))
        print(f"  worst peak RSS {st.worst_peak / MB:.1f} MB ({st.worst_peak_at}); largest rise during a "
              f"case {st.worst_growth / MB:.1f} MB ({st.worst_growth_at}); largest RSS kept after a case "
              f"{st.worst_retained / MB:+.1f} MB")
        print(f"  {st.unexpected} unexpected, {st.timeouts} timeouts")
    print("\nper family: worst time / worst peak RSS (rise during the case) / unexpected / timeouts")
    for family in order:
        if family in stats:
            st = stats[family]
            print(f"  {family:9s} {st.worst_time * 1000:9.1f} ms  {st.worst_peak / MB:7.1f} MB "
                  f"(+{st.worst_growth / MB:.1f})  {st.unexpected:4d}  {st.timeouts:4d}")
    unexpected = sum(s.unexpected for s in stats.values())
    timeouts = sum(s.timeouts for s in stats.values())
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak RSS {overall_peak / MB:.1f} MB (max per-case VmHWM; ru_maxrss {ru / MB:.1f} MB"
          f"{', reset per case' if rss.resettable else ''})")
    print(f"{unexpected} unexpected exceptions, {timeouts} timeouts")
    return 1 if unexpected or timeouts else 0


if __name__ == "__main__":
    sys.exit(main())
