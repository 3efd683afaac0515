"""What is exact and what only agrees, under every kernel set this CPU offers.

    python scripts/check_determinism.py               # all kernel sets, corpus speech + music
    python scripts/check_determinism.py --quick       # one file per model

oneDNN, MKL and numpy pick kernels by CPU; ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY,
MKL_ENABLE_INSTRUCTIONS and NPY_DISABLE_CPU_FEATURES make one machine pick the kernels of
older CPUs. For each setting
(those above this CPU are left out) a worker process, in a fresh model cache:

* builds the four test models and compares their weights with testmodels.REFERENCE_SHA256;
* encodes corpus files with each test model at 24 kbps, at 1 and 2 threads, twice each
  (the two containers must be byte-identical), with the default prior;
* compares test_24khz's streamed codes with a one-pass ``model.encoder`` run's, at 1 and 2
  threads (codec.agreement: equal codes, near-ties where they differ).

Then, across settings and thread counts: the fraction of equal codes between containers,
and the SNR between their decoded audio (decoded with the default setting's model at 2
threads). The tables go to stdout as Markdown (docs/PERFORMANCE.md, "Determinism").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus" / "real").resolve()
FILES = ["speech_alsa_voice_48k.wav", "speech_en_f_allison_8k.wav",
         "music_midi_cityblues_44k_stereo.wav"]
MODELS = ["test_24khz", "test_48khz"]
#: whose weights are compared with the reference (Mimi and DAC need transformers)
BUILT = MODELS + ["test_mimi", "test_dac_44khz"]
KBPS = 24.0

#: (label, environment, CPU flag it needs)
SETTINGS = [
    ("default", {}, None),
    ("oneDNN AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx2"),
    ("oneDNN AVX512_CORE", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "avx512f"),
    ("oneDNN AVX512_CORE_AMX", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "amx_tile"),
    ("ATen avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),
    ("MKL AVX2", {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "avx2"),
    # numpy's sin/exp/log without its AVX-512 code (recipe 4's test_mimi came out different)
    ("numpy no AVX-512", {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}, "avx512f"),
    # a CPU without AVX2 (or another architecture): ATen's default kernels, with oneDNN and
    # MKL held to SSE4 (recipe 2's EnCodec test models came out different here) and numpy
    # to its baseline
    ("no AVX2: ATen default, oneDNN SSE41, MKL SSE4_2, numpy baseline",
     {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
      "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
      "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}, None),
]


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def worker(out: Path, files: list[Path]) -> None:
    import torch

    from tokpack.codec import engine, testmodels
    from tokpack.codecs.encodec import streaming
    from tokpack.codec.agreement import compare_codes
    from tokpack.codec.threads import torch_threads
    from tokpack.codec.weights import load_model

    report: dict = {"capability": torch.backends.cpu.get_cpu_capability(), "weights": {},
                    "repeat_identical": True, "stream": {}}
    for name in BUILT:
        report["weights"][name] = load_model(name).weights_hex == testmodels.REFERENCE_SHA256[name]
    for name in MODELS:
        loaded = load_model(name)
        for path in files:
            for threads in (1, 2):
                runs = []
                for _ in range(2):
                    buf = io.BytesIO()
                    engine.encode(path, buf, model=loaded, bandwidth=KBPS, threads=threads)
                    runs.append(buf.getvalue())
                report["repeat_identical"] &= runs[0] == runs[1]
                (out / f"{name}.{path.stem}.T{threads}.tpk").write_bytes(runs[0])
    model = load_model("test_24khz").model
    import soundfile as sf

    from tokpack.codec.audio import resample

    audio, rate = sf.read(files[0], dtype="float32", always_2d=True)
    signal = resample(torch.from_numpy(audio.mean(axis=1, keepdims=True).T.copy()), rate, 24_000)
    for threads in (1, 2):
        with torch_threads(threads), torch.inference_mode():
            emb = model.encoder(signal[None])
            one = model.quantizer.vq.encode(emb, n_q=32)[:, 0].numpy()
            enc = streaming.CausalEncoder(model, 32)
            streamed = np.concatenate([enc.feed(signal), enc.finish()], axis=1)
            a = compare_codes(model, emb, one, streamed)
        report["stream"][threads] = {"equal": a.equal_fraction, "max_tie_gap": a.max_tie_gap,
                                     "differing_frames": a.differing_frames, "frames": a.frames}
    (out / "report.json").write_text(json.dumps(report))


def decoded(path: Path, loaded) -> np.ndarray:
    import soundfile as sf

    from tokpack.codec import engine

    out = io.BytesIO()
    engine.decode(path, out, model=loaded, subtype="FLOAT", threads=2)
    out.seek(0)
    return sf.read(out, dtype="float64", always_2d=True)[0]


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    err = float(np.sum((ref - got) ** 2))
    return float("inf") if err == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / err)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one corpus file")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    files = [CORPUS / f for f in (FILES[:1] if args.quick else FILES)]
    if args.worker:
        worker(args.worker, files)
        return 0
    flags = cpu_flags()
    settings = [s for s in SETTINGS if s[2] is None or s[2] in flags]
    skipped = [s[0] for s in SETTINGS if s not in settings]
    root = Path(tempfile.mkdtemp(prefix="tokpack-determinism-"))
    reports = {}
    for label, env, _ in settings:
        out = root / label.replace(" ", "_")
        out.mkdir()
        print(f"{label} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, __file__, "--worker", str(out)] + (["--quick"] if args.quick else []),
                       env={**os.environ, **env, "TOKPACK_CACHE": str(out / "cache")}, check=True)
        reports[label] = json.loads((out / "report.json").read_text())

    os.environ["TOKPACK_CACHE"] = str(root / "default" / "cache")  # the models just built
    from tokpack.codec.weights import load_model
    from tokpack.formats import read_tokens

    print(f"CPU flags: {'avx512f' in flags and 'AVX-512' or 'no AVX-512'}"
          f"{', AMX' if 'amx_tile' in flags else ''}; not measured here: {', '.join(skipped) or 'none'}\n")
    print("| setting | ATen kernels | weights = reference (else: which differ) | same bytes twice | "
          "stream = one pass, 1 thread | 2 threads | max tie gap |")
    print("|---|---|---|---|---:|---:|---:|")
    for label, r in reports.items():
        s1, s2 = r["stream"]["1"], r["stream"]["2"]
        print(f"| {label} | {r['capability']} | {', '.join(n for n, same in r['weights'].items() if not same) or 'yes'} | "
              f"{'yes' if r['repeat_identical'] else 'NO'} | {100 * s1['equal']:.3f} % | "
              f"{100 * s2['equal']:.3f} % | {max(s1['max_tie_gap'], s2['max_tie_gap']):.1e} |")
    base = root / "default"
    print("\n| model | compared | codes equal (min over files) | decoded SNR (min) |")
    print("|---|---|---:|---:|")
    for name in MODELS:
        loaded = load_model(name)
        pairs = [("T1 vs T2, default", base, 1, base, 2)]
        pairs += [(f"{label} vs default, T2", root / label.replace(" ", "_"), 2, base, 2)
                  for label in reports if label != "default"]
        for what, dir_a, ta, dir_b, tb in pairs:
            equal, snr = [], []
            for path in files:
                a = dir_a / f"{name}.{path.stem}.T{ta}.tpk"
                b = dir_b / f"{name}.{path.stem}.T{tb}.tpk"
                ca, cb = read_tokens(a), read_tokens(b)
                equal.append(float(np.mean(ca == cb)))
                snr.append(snr_db(decoded(b, loaded), decoded(a, loaded)) if not np.array_equal(ca, cb)
                           else float("inf"))
            print(f"| {name} | {what} | {100 * min(equal):.3f} % | {min(snr):.1f} dB |")
    print(f"\n(containers in {root})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
