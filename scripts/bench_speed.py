"""tokpack encode/decode against the encodec package's own compress/decompress.

    python scripts/bench_speed.py                  # 60 s clips, 24 kHz and 48 kHz, 6 kbps
    python scripts/bench_speed.py --repeats 5 --threads 1
    python scripts/bench_speed.py --profile        # + torch profiler tables (30 s clips)
    python scripts/bench_speed.py --whole-process  # commands as a user times them
    python scripts/bench_speed.py --startup        # what a command costs before any audio

``--whole-process`` times ``tokpack encode``/``tokpack decode`` against EnCodec's own
command-line script (``python -m encodec``: ``compress``/``decompress`` with its file
handling), each a separate process, alternating, medians of ``--repeats`` after a
warm-up, on 0.1 s, 60 s and 5 min clips (``--clips``), 24 kHz mono speech and 48 kHz
stereo music (WAV, PCM_16, at the model's rate: no resampling on either side). Both load
the same weights file (a test model's, from tokpack's cache) and run the same threads
(``--threads``, default: the core count). EnCodec's script runs unchanged except where this
machine cannot run it: it builds its model from the weights file instead of downloading
the official one, and reads and writes WAV with soundfile (torchaudio's need torchcodec).

``--jobs`` times ``tokpack encode``/``decode`` of ``--files`` files of ``--seconds-each``
(24 kHz speech) as one command each, for each ``-j N -T M`` of ``--combos`` (default
``1x2 2x1``, i.e. -j 1 -T 2 and -j 2 -T 1), alternating, medians.

``--startup`` times each stage of a command's start in fresh processes: the interpreter,
imports (numpy, torch, encodec), ``tokpack --help``/``inspect``/``models``, loading a
model, and a whole ``tokpack encode`` of a 0.1 s file.

Side by side in one process, same weights, same thread count:

* tokpack: ``tokpack.encode`` of a WAV file (in memory) to a container, and
  ``tokpack.decode`` of that container to a WAV file: reading, resampling, the model,
  entropy coding (zstd, coder ``auto``) and writing included.
* reference: ``encodec.compress(model, wav, use_lm=False)`` on the tensor already in
  memory, and ``encodec.decompress(bytes)`` (its bit packing included).

The weights are tokpack's full-size test models (EnCodec's own network with seeded
weights: the speed of the official models, not their sound); the reference model is
built by encodec and loaded with the same state dict. ``decompress`` builds its model by
name (downloading official weights), so for the run its model table returns the one
built here. Each pair is run once to warm up, then ``--repeats`` times alternately; the
table shows medians. Another process using the CPUs skews everything: the script
prints the load average, and ``--wait`` waits for the machine to be idle first.

It also reports how equivalent the outputs are: the fraction of tokpack's codes equal to
encodec's own ``model.encode`` codes, and the SNR between tokpack's decoded audio and
``decompress``'s.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()


def clip(seconds: float, rate: int, channels: int) -> np.ndarray:
    """float32 [frames, channels]: corpus speech (mono) or music (stereo), tiled."""
    import soundfile as sf
    import torch

    from tokpack.codec.audio import resample

    name = "speech_alsa_voice_48k.wav" if channels == 1 else "music_gnome_startup3_44k_stereo.wav"
    path = CORPUS / "real" / name
    n = int(round(seconds * rate))
    if path.is_file():
        x, r = sf.read(path, dtype="float32", always_2d=True)
        x = x[:, :channels] if x.shape[1] >= channels else np.repeat(x[:, :1], channels, axis=1)
        x = resample(torch.from_numpy(np.ascontiguousarray(x.T)), r, rate).numpy()
        reps = -(-n // x.shape[1])
        return np.ascontiguousarray(np.tile(x, (1, reps))[:, :n].T)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * np.sin(t)) * t) + 0.05 * np.sin(2 * np.pi * 3 * t)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def encodec_compress_module():
    """The module encodec.compress (the package's attribute of that name is the function)."""
    import importlib

    return importlib.import_module("encodec.compress")


def reference_model(loaded):
    """encodec's own EncodecModel (weight norm, as encodec builds it) with the same weights."""
    import torch

    from tokpack.codecs.encodec.architecture import build_architecture
    from tokpack.codec.registry import get_spec

    spec = loaded.spec
    official = "encodec_48khz" if spec.segmented else "encodec_24khz"
    model = build_architecture(get_spec(official))
    model.load_state_dict(torch.load(loaded.weights_path, map_location="cpu", weights_only=True))
    model.name = official  # compress() accepts only the official names
    return model.eval()


#: (step, tokpack's timing key, the reference's)
STEPS = (("encode", "tp_encode", "ref_encode"), ("decode", "tp_decode", "ref_decode"))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = np.sum((ref.astype(np.float64) - test) ** 2)
    return float("inf") if err == 0 else 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / err)


def wait_idle(limit: float, timeout: float) -> None:
    t0 = time.time()
    while os.getloadavg()[0] > limit and time.time() - t0 < timeout:
        time.sleep(10)


def alternate(runs: dict, args) -> dict:
    """Seconds of each of ``runs`` (key -> a function that runs it once), alternating: one
    round to warm up, then ``args.repeats`` timed rounds; with ``--wait``, each run waits
    for the machine to be idle first."""
    times = {key: [] for key in runs}
    for rep in range(args.repeats + 1):
        for key, run in runs.items():
            if args.wait:
                wait_idle(args.idle_load, 600)
            t0 = time.perf_counter()
            run()
            if rep:
                times[key].append(time.perf_counter() - t0)
    return times


def bench_model(name: str, args) -> dict:
    import soundfile as sf
    import torch
    ecdc = encodec_compress_module()

    from tokpack.codec.engine import decode, encode
    from tokpack.codec.weights import load_model
    from tokpack.formats import read_container

    loaded = load_model(name)
    ref = reference_model(loaded)
    spec = loaded.spec
    bw = args.bandwidth
    ref.set_target_bandwidth(bw)
    x = clip(args.seconds, spec.sample_rate, spec.channels)
    wav_bytes = io.BytesIO()
    sf.write(wav_bytes, x, spec.sample_rate, subtype="FLOAT", format="WAV")
    wav_bytes = wav_bytes.getvalue()
    xt = torch.from_numpy(np.ascontiguousarray(x.T))
    official = ref.name
    saved = ecdc.MODELS[official]
    ecdc.MODELS[official] = lambda: ref  # decompress() builds its model by name

    state = {}

    def tp_encode():
        out = io.BytesIO()
        encode(io.BytesIO(wav_bytes), out, model=loaded, bandwidth=bw, threads=args.threads)
        state["tpk"] = out.getvalue()

    def tp_decode():
        out = io.BytesIO()
        decode(io.BytesIO(state["tpk"]), out, model=loaded, subtype="FLOAT",
               threads=args.threads)
        state["tp_audio"] = out.getvalue()

    def ref_encode():
        state["ecdc"] = ecdc.compress(ref, xt, use_lm=False)

    def ref_decode():
        state["ref_audio"] = ecdc.decompress(state["ecdc"])[0]

    funcs = {"tp_encode": tp_encode, "ref_encode": ref_encode, "tp_decode": tp_decode,
             "ref_decode": ref_decode}
    old_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)  # the reference runs in the caller's setting
    try:
        timings = alternate(funcs, args)
        # agreement, outside the timings
        with torch.no_grad():
            frames = ref.encode(xt[None])
        ref_codes = np.concatenate([c[0].numpy() for c, _ in frames], axis=1)
        tokens = read_container(io.BytesIO(state["tpk"])).tokens[0]
        same = float(np.mean(tokens == ref_codes)) if tokens.shape == ref_codes.shape else 0.0
        y = sf.read(io.BytesIO(state["tp_audio"]), dtype="float32", always_2d=True)[0].T
        r = state["ref_audio"].numpy()
    finally:
        ecdc.MODELS[official] = saved
        torch.set_num_threads(old_threads)
    med = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "name": name, "spec": spec, "median": med, "all": timings,
        "codes_equal": same, "snr_db": snr_db(r, y) if r.shape == y.shape else float("nan"),
        "tpk_bytes": len(state["tpk"]), "ecdc_bytes": len(state["ecdc"]),
    }


def profile(name: str, args) -> None:
    """torch profiler tables: where the time of each pipeline goes (shorter clip)."""
    import soundfile as sf
    import torch
    ecdc = encodec_compress_module()
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from tokpack.codec.engine import decode, encode
    from tokpack.codec.weights import load_model

    loaded = load_model(name)
    ref = reference_model(loaded)
    ref.set_target_bandwidth(args.bandwidth)
    spec = loaded.spec
    x = clip(args.profile_seconds, spec.sample_rate, spec.channels)
    wav = io.BytesIO()
    sf.write(wav, x, spec.sample_rate, subtype="FLOAT", format="WAV")
    xt = torch.from_numpy(np.ascontiguousarray(x.T))
    tpk = io.BytesIO()
    encode(io.BytesIO(wav.getvalue()), tpk, model=loaded, bandwidth=args.bandwidth,
           threads=args.threads)
    data = ecdc.compress(ref, xt, use_lm=False)
    saved = ecdc.MODELS[ref.name]
    ecdc.MODELS[ref.name] = lambda: ref
    runs = {
        "tokpack encode": lambda: encode(io.BytesIO(wav.getvalue()), io.BytesIO(), model=loaded,
                                         bandwidth=args.bandwidth, threads=args.threads),
        "tokpack decode": lambda: decode(io.BytesIO(tpk.getvalue()), io.BytesIO(), model=loaded,
                                         subtype="FLOAT", threads=args.threads),
        "encodec compress": lambda: ecdc.compress(ref, xt, use_lm=False),
        "encodec decompress": lambda: ecdc.decompress(data),
    }
    try:
        for title, f in runs.items():
            f()  # warm up
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                f()
                wall = time.perf_counter() - t0
            print(f"\n### {name}: {title}, {args.profile_seconds:g} s of audio, "
                  f"{wall:.2f} s wall\n")
            print(op_table(prof, wall))
    finally:
        ecdc.MODELS[ref.name] = saved


def op_table(prof, wall: float, rows: int = 10) -> str:
    """Markdown: the ops with the most self time, and their share of the total."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = ["| op | calls | self ms | share |", "|---|---:|---:|---:|"]
    for e in events[:rows]:
        lines.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1000:.0f} | "
                     f"{100 * e.self_cpu_time_total / total:.1f} % |")
    lines.append(f"| (all ops, self time) | | {total / 1000:.0f} | 100 % |")
    return "\n".join(lines)


# --- whole processes -------------------------------------------------------------------

def encodec_child(argv: list[str]) -> int:
    """EnCodec's own script (encodec/__main__.py) as a process, with the model built from
    ``--weights`` and soundfile for WAV I/O; the rest is encodec's code, unchanged."""
    import soundfile as sf
    import torch
    import encodec.__main__ as cli
    from encodec import EncodecModel

    weights, threads = argv[0], int(argv[1])
    torch.set_num_threads(threads)
    state = torch.load(weights, map_location="cpu", weights_only=True)

    def builder(name):
        def build():
            # encodec_24khz -> EncodecModel.encodec_model_24khz, as encodec's MODELS table
            model = getattr(EncodecModel, f"encodec_model_{name.split('_')[1]}")(pretrained=False)
            model.load_state_dict(state)
            model.name = name
            return model.eval()
        return build

    for name in ("encodec_24khz", "encodec_48khz"):
        cli.MODELS[name] = builder(name)

    def load(path):
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(x.T.copy()), rate

    def save_audio(wav, path, sample_rate, rescale=False):
        wav = wav * min(0.99 / wav.abs().max(), 1) if rescale else wav.clamp(-0.99, 0.99)
        sf.write(str(path), wav.numpy().T, sample_rate, subtype="PCM_16")

    cli.torchaudio.load = load
    cli.save_audio = save_audio
    sys.argv = ["encodec", *argv[2:]]
    cli.main()
    return 0


def write_clip(path: Path, seconds: float, rate: int, channels: int) -> None:
    import soundfile as sf

    sf.write(path, clip(seconds, rate, channels), rate, subtype="PCM_16")


#: children may cache their bytecode, as an installed package has it (pip compiles it):
#: with PYTHONDONTWRITEBYTECODE set, tokpack's modules would be compiled in every run
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def command(cmd: list[str]):
    """A function that runs ``cmd`` as a process (exits this script if it fails)."""
    import subprocess

    def run() -> None:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=CHILD_ENV)
        if done.returncode:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")

    return run


def whole_process(args) -> list[dict]:
    """Each (model, clip): tokpack's and EnCodec's commands, alternating; medians."""
    import tempfile

    from tokpack.codec.registry import get_spec
    from tokpack.codec.weights import resolve_weights

    threads = args.threads or os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models:
            spec = get_spec(name)
            weights = str(resolve_weights(spec))
            for seconds in args.clips:
                wav = tmp / f"{name}-{seconds:g}.wav"
                write_clip(wav, seconds, spec.sample_rate, spec.channels)
                tpk, ecdc = tmp / "out.tpk", tmp / "out.ecdc"
                tp_wav, ref_wav = tmp / "tp.wav", tmp / "ref.wav"
                ref = [sys.executable, str(Path(__file__).resolve()), "--encodec-child", weights,
                       str(threads), "-f", "-b", f"{args.bandwidth:g}"]
                if spec.segmented:
                    ref.append("--hq")
                tok = [sys.executable, "-m", "tokpack"]
                commands = {
                    "tp_encode": tok + ["encode", str(wav), "-m", name, "-b", f"{args.bandwidth:g}",
                                        "-T", str(threads), "-f", "-q", "-o", str(tpk)],
                    "ref_encode": ref + [str(wav), str(ecdc)],
                    "tp_decode": tok + ["decode", str(tpk), "-T", str(threads), "-f", "-q",
                                        "-o", str(tp_wav)],
                    "ref_decode": ref + [str(ecdc), str(ref_wav)],
                }
                timings = alternate({k: command(c) for k, c in commands.items()}, args)
                med = {k: statistics.median(v) for k, v in timings.items()}
                rows.append({"name": name, "seconds": seconds, "median": med, "all": timings,
                             "tpk_bytes": tpk.stat().st_size, "ecdc_bytes": ecdc.stat().st_size})
                print(f"  {name} {seconds:g} s: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in med.items()), file=sys.stderr, flush=True)
    return rows


def print_whole_process(rows: list[dict], args) -> None:
    threads = args.threads or os.cpu_count()
    print(f"whole processes, {threads} threads, {args.bandwidth:g} kbps, median of "
          f"{args.repeats} (ratio = EnCodec's time / tokpack's)\n")
    print("| model | clip | step | tokpack s | EnCodec s | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        m = r["median"]
        for step, tp, ref in STEPS:
            print(f"| {r['name']} | {r['seconds']:g} s | {step} | {m[tp]:.2f} | {m[ref]:.2f} | "
                  f"{m[ref] / m[tp]:.2f}x |")
    print("\nall timings (s):")
    for r in rows:
        for key, values in r["all"].items():
            print(f"  {r['name']} {r['seconds']:g} s {key}: " + ", ".join(f"{v:.2f}" for v in values))


STAGES = {
    "python": "pass",
    "import numpy": "import numpy",
    "import typer": "import typer",
    "import torch": "import torch",
    "import torch, encodec": "import torch, encodec",
    "import tokpack.cli": "import tokpack.cli",
}


def startup(args) -> None:
    """Fresh processes: each stage's wall time, median of --repeats."""
    import subprocess
    import tempfile

    from tokpack.codec.registry import get_spec

    name = args.models[0]
    spec = get_spec(name)
    with tempfile.TemporaryDirectory() as tmp:
        wav, tpk = Path(tmp) / "short.wav", Path(tmp) / "short.tpk"
        write_clip(wav, 0.1, spec.sample_rate, spec.channels)
        tok = [sys.executable, "-m", "tokpack"]
        subprocess.run(tok + ["encode", str(wav), "-m", name, "-q", "-o", str(tpk)], check=True,
                       env=CHILD_ENV)
        load = ("import time, torch, encodec; from tokpack.codec.weights import load_model; "
                f"t = time.perf_counter(); load_model({name!r}); "
                "print(time.perf_counter() - t)")
        stages = {k: [sys.executable, "-c", v] for k, v in STAGES.items()}
        stages.update({
            "tokpack --help": tok + ["--help"],
            "tokpack --version": tok + ["--version"],
            "tokpack models": tok + ["models"],
            "tokpack inspect (0.1 s container)": tok + ["inspect", str(tpk)],
            "tokpack unpack --help": tok + ["unpack", "--help"],
            f"tokpack encode (0.1 s, {name})": tok + ["encode", str(wav), "-m", name, "-q", "-f",
                                                       "-o", str(tpk)],
            f"tokpack decode (0.1 s, {name})": tok + ["decode", str(tpk), "-q", "-f", "-o",
                                                       str(Path(tmp) / "back.wav")],
        })
        times = alternate({k: command(c) for k, c in stages.items()}, args)
        loads = [float(subprocess.run([sys.executable, "-c", load], capture_output=True,
                                      text=True, check=True, env=CHILD_ENV).stdout.split()[-1])
                 for _ in range(args.repeats)]
    print(f"start-up, fresh processes, median of {args.repeats} (s)\n")
    print("| stage | wall s |")
    print("|---|---:|")
    for key, values in times.items():
        print(f"| {key} | {statistics.median(values):.3f} |")
    print(f"| load_model({name!r}), in process after imports | {statistics.median(loads):.3f} |")


def jobs_matrix(args) -> None:
    """Many files: which -j/-T split of the cores is fastest, whole commands."""
    import tempfile

    from tokpack.codec.registry import get_spec

    name = args.models[0]
    spec = get_spec(name)
    combos = [tuple(int(v) for v in c.split("x")) for c in args.combos]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x = clip(args.files * args.seconds_each, spec.sample_rate, spec.channels)
        n = int(args.seconds_each * spec.sample_rate)
        import soundfile as sf

        wavs = []
        for i in range(args.files):
            wavs.append(tmp / f"f{i:03d}.wav")
            sf.write(wavs[-1], x[i * n:(i + 1) * n], spec.sample_rate, subtype="PCM_16")
        tok = [sys.executable, "-m", "tokpack"]
        runs = {}
        for j, t in combos:
            opts = ["-j", str(j), "-T", str(t), "-f", "-q"]
            runs[((j, t), "encode")] = command(tok + ["encode", *map(str, wavs), "-m", name, *opts])
            runs[((j, t), "decode")] = command(
                tok + ["decode", *(str(w.with_suffix(".tpk")) for w in wavs), *opts])
        times = alternate(runs, args)
    audio = args.files * args.seconds_each
    print(f"{args.files} files of {args.seconds_each:g} s ({name}), {os.cpu_count()} CPUs, "
          f"median of {args.repeats}\n")
    print("| -j | -T | encode s | RTF | decode s | RTF |")
    print("|---:|---:|---:|---:|---:|---:|")
    for j, t in combos:
        e = statistics.median(times[((j, t), "encode")])
        d = statistics.median(times[((j, t), "decode")])
        print(f"| {j} | {t} | {e:.2f} | {audio / e:.1f} | {d:.2f} | {audio / d:.1f} |")
    print("\nall timings (s):")
    for (combo, step), values in times.items():
        print(f"  -j {combo[0]} -T {combo[1]} {step}: " + ", ".join(f"{v:.2f}" for v in values))


def main() -> int:
    if sys.argv[1:2] == ["--encodec-child"]:
        return encodec_child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--bandwidth", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["test_24khz", "test_48khz"])
    ap.add_argument("--wait", action="store_true",
                    help="before each timed run, wait (up to 10 min) for the load average "
                         "to drop below --idle-load")
    ap.add_argument("--idle-load", type=float, default=0.5)
    ap.add_argument("--profile", action="store_true", help="also print op profiles")
    ap.add_argument("--profile-seconds", type=float, default=30.0)
    ap.add_argument("--whole-process", action="store_true",
                    help="tokpack's commands against EnCodec's script, as processes")
    ap.add_argument("--clips", type=float, nargs="+", default=[0.1, 60.0, 300.0],
                    help="clip lengths in seconds for --whole-process")
    ap.add_argument("--startup", action="store_true", help="start-up stages, fresh processes")
    ap.add_argument("--jobs", action="store_true", help="-j/-T splits on many files")
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seconds-each", type=float, default=10.0)
    ap.add_argument("--combos", nargs="+", default=["1x2", "2x1"], metavar="JxT")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if args.startup:
        startup(args)
        return 0
    if args.whole_process:
        print_whole_process(whole_process(args), args)
        return 0
    if args.jobs:
        jobs_matrix(args)
        return 0
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    results = [bench_model(name, args) for name in args.models]
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"{args.seconds:g} s clips at {args.bandwidth:g} kbps, median of {args.repeats} "
          f"(real-time factor = audio seconds per second; ratio = reference time / tokpack time)\n")
    print("| model | step | tokpack s | RTF | encodec s | RTF | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        m = r["median"]
        for step, tp, ref in STEPS:
            print(f"| {r['name']} | {step} | {m[tp]:.2f} | {args.seconds / m[tp]:.1f} | "
                  f"{m[ref]:.2f} | {args.seconds / m[ref]:.1f} | {m[ref] / m[tp]:.2f}x |")
    print()
    print("| model | codes equal to encodec's | decoded SNR vs decompress | .tpk bytes | .ecdc bytes |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {100 * r['codes_equal']:.3f} % | {r['snr_db']:.1f} dB | "
              f"{r['tpk_bytes']} | {r['ecdc_bytes']} |")
    print("\nall timings (s):")
    for r in results:
        for key, values in r["all"].items():
            print(f"  {r['name']} {key}: " + ", ".join(f"{v:.2f}" for v in values))
    if args.profile:
        for name in args.models:
            profile(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
