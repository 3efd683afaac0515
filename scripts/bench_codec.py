"""Time the codec layer on the test models, and sweep the corpus.

    python scripts/bench_codec.py                 # build times, 30 s encode/decode, diversity
    python scripts/bench_codec.py --corpus        # + every corpus file through the models
    python scripts/bench_codec.py --seconds 60 --threads 1
    python scripts/bench_codec.py --models test_mimi test_dac_44khz --corpus

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


def packed_bytes(container: bytes) -> tuple[int, int]:
    """(the bytes of the container's codes bit-packed, ceil(log2 codebook size) bits each;
    the bytes its coded tokens take, without header, chunk framing and END)."""
    from tokpack.codec.tokens_io import inspect
    from tokpack.formats import loads

    c = loads(container)
    bits = (c.header.codebook_size - 1).bit_length()
    return -(-c.tokens.size * bits // 8), inspect(io.BytesIO(container)).token_bytes


def agreement(loaded, x: np.ndarray) -> None:
    """Codes of tokpack's streamed/windowed encode against the model's own one-pass encode
    (transformers) on the same clip, at the model rate, all codebooks; at 1 and 2 threads."""
    import importlib

    import torch

    from tokpack.codec.engine import encode_array
    from tokpack.codec.threads import torch_threads

    spec = loaded.spec
    family = importlib.import_module(f"tokpack.codecs.{spec.family}.model")
    n_q = spec.max_codebooks
    for n in (1, 2):
        enc = encode_array(x[:, 0], spec.sample_rate, loaded, max(spec.bandwidths), threads=n)
        with torch_threads(n), torch.inference_mode():
            ref = family.reference_encode(loaded.model, torch.from_numpy(x[None, :, 0].copy()), n_q)
        got = enc.tokens[0].astype(np.int64)
        same = got == ref
        print(f"{spec.name} codes vs one-pass encode, {n} thread(s): {same.mean():.4%} equal "
              f"({same.size} codes; all but the last frame: {same[:, :-1].mean():.4%}; "
              f"first codebook {same[0].mean():.4%})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", help="TOKPACK_CACHE to use (default: a fresh temporary one)")
    ap.add_argument("--corpus", action="store_true", help="also sweep every corpus file")
    ap.add_argument("--models", nargs="+", default=["test_24khz", "test_48khz"])
    ap.add_argument("--folders", nargs="+", default=["real", "variants", "edge", "malformed"],
                    help="corpus folders the sweep reads")
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
    for name in args.models:
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
            print(f"{name} {args.seconds:g} s at {bw:g} kbps: encode {er.seconds:.2f} s "
                  f"(x{args.seconds / er.seconds:.1f} real time), decode {dr.seconds:.2f} s "
                  f"(x{args.seconds / dr.seconds:.1f}), {er.bytes_out} bytes "
                  f"({er.bitrate_bps / 1000:.2f} kbps)")
        enc = encode_array(x[: 10 * spec.sample_rate], spec.sample_rate, loaded,
                           max(spec.bandwidths), threads=args.threads)
        counts = [len(np.unique(row)) for row in enc.tokens[0]]
        print(f"{name} distinct codes per codebook (10 s speech, max bandwidth): {counts}")
        if spec.family in ("mimi", "dac"):
            agreement(loaded, x)

    if args.corpus:
        if not CORPUS.is_dir():
            print(f"no corpus at {CORPUS}")
            return 1
        failures = 0
        sizes = {name: [0, 0, 0] for name in models}  # container, bit-packed, coded tokens
        for folder in args.folders:
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
                        packed, coded = packed_bytes(tpk.getvalue())
                        sizes[name][0] += er.bytes_out
                        sizes[name][1] += packed
                        sizes[name][2] += coded
                        status = (f"{'ok' if ok else 'LENGTH MISMATCH'} {er.bytes_out} B "
                                  f"({er.bytes_out / max(packed, 1):.3f} of bit-packed; "
                                  f"tokens {coded / max(packed, 1):.3f}), "
                                  f"{dr.clipped_samples} clipped")
                    except Exception as exc:  # report and go on: this is a sweep
                        status = f"{type(exc).__name__}: {exc}"
                    print(f"{folder}/{path.name} {name}: {status} "
                          f"({time.perf_counter() - t0:.2f} s)")
        for name, (tpk_bytes, packed, coded) in sizes.items():
            print(f"{name}: containers {tpk_bytes} B = {tpk_bytes / max(packed, 1):.3f} of the "
                  f"codes bit-packed ({packed} B); their coded tokens {coded} B = "
                  f"{coded / max(packed, 1):.3f} (default prior)")
        print(f"{failures} length mismatches")
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
