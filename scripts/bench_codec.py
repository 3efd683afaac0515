"""Time the codec layer on the test models, and sweep the corpus.

    python scripts/bench_codec.py                 # build times, 30 s encode/decode, diversity
    python scripts/bench_codec.py --corpus        # + every corpus file through both test models
    python scripts/bench_codec.py --seconds 60 --threads 1

Uses a temporary TOKPACK_CACHE (so the build is timed) unless --cache is given. The
numbers are for the test models, whose network is EnCodec's: time per second of audio
is representative of the official models on the same machine, quality is not.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()


def speech_like(seconds: float, rate: int, channels: int) -> np.ndarray:
    """Corpus speech tiled to the length (synthetic chirps if the corpus is absent)."""
    import soundfile as sf

    path = CORPUS / "real" / "speech_alsa_voice_48k.wav"
    n = int(seconds * rate)
    if path.is_file():
        import torch

        from tokpack.codec.audio import resample

        x, r = sf.read(path, dtype="float32")
        x = resample(torch.from_numpy(x)[None], r, rate)[0].numpy()
        x = np.resize(x, n)
    else:
        t = np.arange(n) / rate
        x = (0.3 * np.sin(2 * np.pi * (200 + 300 * np.sin(t)) * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", help="TOKPACK_CACHE to use (default: a fresh temporary one)")
    ap.add_argument("--corpus", action="store_true", help="also sweep every corpus file")
    args = ap.parse_args()

    tmp = None
    if args.cache:
        os.environ["TOKPACK_CACHE"] = args.cache
    else:
        tmp = tempfile.TemporaryDirectory()
        os.environ["TOKPACK_CACHE"] = tmp.name
    sys.path.insert(0, str(REPO))
    import soundfile as sf
    import torch

    from tokpack.codec.engine import decode, encode, encode_array
    from tokpack.codec.weights import load_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default, "
          f"run with threads={args.threads}")
    models = {}
    for name in ("test_24khz", "test_48khz"):
        t0 = time.perf_counter()
        models[name] = load_model(name)
        print(f"{name}: built+loaded in {time.perf_counter() - t0:.1f} s "
              f"(weights {models[name].weights_hex[:12]})")

    for name, loaded in models.items():
        spec = loaded.spec
        x = speech_like(args.seconds, spec.sample_rate, spec.channels)
        src = io.BytesIO()
        sf.write(src, x, spec.sample_rate, subtype="PCM_16", format="WAV")
        for bw in (spec.default_bandwidth, max(spec.bandwidths)):
            src.seek(0)
            tpk = io.BytesIO()
            er = encode(src, tpk, model=loaded, bandwidth=bw, threads=args.threads)
            out = io.BytesIO()
            dr = decode(io.BytesIO(tpk.getvalue()), out, model=loaded, threads=args.threads)
            print(f"{name} {args.seconds:g} s at {bw:g} kbps: encode {er.seconds:.2f} s, "
                  f"decode {dr.seconds:.2f} s, {er.bytes_out} bytes ({er.bitrate_bps / 1000:.2f} kbps)")
        enc = encode_array(x[: 10 * spec.sample_rate], spec.sample_rate, loaded,
                           max(spec.bandwidths), threads=args.threads)
        counts = [len(np.unique(row)) for row in enc.tokens[0]]
        print(f"{name} distinct codes per codebook (10 s speech, max bandwidth): {counts}")

    if args.corpus:
        if not CORPUS.is_dir():
            print(f"no corpus at {CORPUS}")
            return 1
        failures = 0
        for folder in ("real", "variants", "edge", "malformed"):
            for path in sorted((CORPUS / folder).iterdir()):
                for name, loaded in models.items():
                    t0 = time.perf_counter()
                    try:
                        tpk = io.BytesIO()
                        er = encode(path, tpk, model=loaded, threads=args.threads)
                        out = io.BytesIO()
                        dr = decode(io.BytesIO(tpk.getvalue()), out, model=loaded,
                                    threads=args.threads)
                        info = sf.info(path)
                        ok = (dr.frames, dr.sample_rate, dr.channels) == (
                            info.frames, info.samplerate, info.channels)
                        failures += not ok
                        status = (f"{'ok' if ok else 'LENGTH MISMATCH'} {er.bytes_out} B, "
                                  f"{dr.clipped_samples} clipped")
                    except Exception as exc:  # report and go on: this is a sweep
                        status = f"{type(exc).__name__}: {exc}"
                    print(f"{folder}/{path.name} {name}: {status} "
                          f"({time.perf_counter() - t0:.2f} s)")
        print(f"{failures} length mismatches")
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
