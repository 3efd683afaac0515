"""Peak memory (RSS) of tokpack encode + decode for long 24 kHz audio.

    python scripts/bench_memory.py                  # 1 and 10 minutes
    python scripts/bench_memory.py --hour           # and 60 minutes (about 15 minutes to run)
    python scripts/bench_memory.py --hour --reference 1 10   # + encodec's one-pass encode

Each case is one child process that loads the model, encodes a generated WAV file
(24 kHz mono PCM_16, speech tiled from the corpus, or chirps without it) to a .tpk and
decodes it to a WAV, as a user's script would, and ends as the ``tokpack`` command does
(``cli.app.console``: without the C++ teardown of torch's libraries, which took up to 134 MB
more at exit). The table gives the child's peak RSS
(``os.wait4``'s ``ru_maxrss``: whole process, torch included) and, from the child's own
``VmHWM``, the peak after loading (the floor: Python, torch, the model) and after
encoding. ``--reference M ...`` also runs encodec's ``EncodecModel.encode`` on the
whole signal of those durations in a child of its own (what tokpack did before it
streamed), same weights; it needs ~16.5 MB per audio second, so not for an hour.

The weights are the full-size test model (``test_24khz``: EnCodec's network, seeded
weights) unless ``--model encodec_24khz`` finds the official checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()
RATE = 24_000


def write_long_wav(path: Path, seconds: float) -> None:
    """A 24 kHz mono PCM_16 WAV of ``seconds``, written a block at a time."""
    import numpy as np
    import soundfile as sf

    src = CORPUS / "real" / "speech_alsa_voice_48k.wav"
    if src.is_file():
        x, rate = sf.read(src, dtype="float32", always_2d=True)
        x = x.mean(axis=1)[:: rate // RATE] if rate % RATE == 0 else x.mean(axis=1)
    else:
        t = np.arange(10 * RATE) / RATE
        x = (0.3 * np.sin(2 * np.pi * (200 + 300 * np.sin(t)) * t)).astype(np.float32)
    total = int(seconds * RATE)
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as f:
        done = 0
        while done < total:
            piece = x[: total - done]
            f.write(piece)
            done += piece.shape[0]


CHILD = r"""
import json, os, re, sys, time
def hwm():
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
args = json.loads(sys.argv[1])
sys.path.insert(0, args["repo"])
import torch
from tokpack.codec.weights import load_model
loaded = load_model(args["model"])
out = {"after_load": hwm()}
t0 = time.perf_counter()
if args["mode"] == "tokpack":
    from tokpack.codec.engine import decode, encode
    er = encode(args["wav"], args["tpk"], model=loaded, threads=args["threads"])
    out["encode_s"] = time.perf_counter() - t0
    out["after_encode"] = hwm()
    t0 = time.perf_counter()
    dr = decode(args["tpk"], args["out"], model=loaded, threads=args["threads"])
    out["decode_s"] = time.perf_counter() - t0
    out["frames"] = dr.frames
else:  # encodec's own encode on the whole signal, as tokpack did before it streamed
    import soundfile as sf
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    x, _ = sf.read(args["wav"], dtype="float32")
    model = loaded.model
    model.set_target_bandwidth(6.0)
    with torch.no_grad():
        frames = model.encode(torch.from_numpy(x)[None, None])
    out["encode_s"] = time.perf_counter() - t0
    out["after_encode"] = hwm()
print(json.dumps(out), flush=True)
os._exit(0)  # as the tokpack command ends (cli.app.console): no C++ teardown of torch's libraries
"""


def run_case(minutes: float, mode: str, args, tmp: Path) -> dict:
    wav = tmp / f"in_{minutes:g}min.wav"
    if not wav.exists():
        write_long_wav(wav, minutes * 60)
    spec = {"repo": str(REPO), "model": args.model, "threads": args.threads, "mode": mode,
            "wav": str(wav), "tpk": str(tmp / "x.tpk"), "out": str(tmp / "y.wav")}
    t0 = time.perf_counter()
    with open(tmp / "stdout", "w+") as out, open(tmp / "stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)],
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({mode}, {minutes:g} min):\n{stderr[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    result["wall_s"] = wall
    for name in ("x.tpk", "y.wav"):
        (tmp / name).unlink(missing_ok=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    ap.add_argument("--hour", action="store_true", help="also 60 minutes")
    ap.add_argument("--reference", type=float, nargs="*", default=[], metavar="MIN",
                    help="also encodec's one-pass encode for these durations "
                         "(needs ~16.5 MB per second of audio)")
    ap.add_argument("--model", default="test_24khz")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit-gb", type=float, default=0.8, help="goal to check against")
    args = ap.parse_args()
    minutes = list(args.minutes) + ([60.0] if args.hour and 60.0 not in args.minutes else [])

    import torch

    print(f"tokpack peak RSS, encode + decode of 24 kHz mono PCM_16 ({args.model}, "
          f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()})")
    gb = 1e9
    print()
    print("| pipeline | audio | after load | after encode | peak (encode+decode) | encode s | decode s |")
    print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
    ok = True

    def row(name: str, m: float, r: dict) -> None:  # printed as each case ends
        decode_s = f"{r['decode_s']:.1f}" if "decode_s" in r else "-"
        print(f"| {name} | {m:g} min | {r['after_load'] / gb:.3f} GB | "
              f"{r['after_encode'] / gb:.3f} GB | {r['peak_rss'] / gb:.3f} GB | "
              f"{r['encode_s']:.1f} | {decode_s} |", flush=True)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for m in minutes:
            r = run_case(m, "tokpack", args, tmp)
            row("tokpack", m, r)
            if m >= 10:
                ok &= r["peak_rss"] / gb <= args.limit_gb
            if m in args.reference:
                row("encodec encode", m, run_case(m, "reference", args, tmp))
    print()
    print(f"goal: peak <= {args.limit_gb} GB for 10 and 60 minutes: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
