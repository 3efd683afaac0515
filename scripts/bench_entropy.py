"""Entropy coders on the corpus: bytes and speed of every token coder, against the bounds.

    python scripts/bench_entropy.py                       # test_24khz at 6 and 24 kbps
    python scripts/bench_entropy.py --model test_48khz --kbps 6 24 --lm
    python scripts/bench_entropy.py --json rows.ndjson

For each real corpus file (../shared/corpus/real) and bandwidth it encodes the audio once
(test model, 2 threads), then codes the same tokens, chunk by chunk as containers do, with:
bit-packing (PACK), the zstd mode (the smaller of PACK_ZSTD and PLANES_ZSTD per chunk, what
`--entropy zstd|planes|auto` did before CTX), CTX with the uniform prior, CTX with the
model's shipped prior (tokpack/priors, trained on synthetic audio that shares nothing with
the corpus), and with --lm EnCodec's LM coder (a seeded random LM for the test models:
a speed anchor, not a quality one). Bounds, on the same tokens: the order-0 entropy
(per file and codebook, static, table not paid) and the order-1 entropy (H(x_t | x_t-1),
same). Bytes are coded token bytes (chunk payloads without framing); speeds are tokens per
second of the coder alone, and x real time = tokens/s over the tokens of one audio second.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import zstandard

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus" / "real").resolve()


def entropy_bits(counts: np.ndarray) -> float:
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def bounds(tokens: np.ndarray, size: int) -> tuple[float, float]:
    """Order-0 and order-1 empirical entropy in bytes, per stream and codebook, summed."""
    o0 = o1 = 0.0
    for row in tokens.reshape(-1, tokens.shape[2]).astype(np.int64):
        o0 += entropy_bits(np.bincount(row, minlength=size))
        if len(row) > 1:
            o1 += entropy_bits(np.bincount(row[:-1] * size + row[1:])) - entropy_bits(
                np.bincount(row[:-1], minlength=size))
        o1 += entropy_bits(np.bincount(row[:1], minlength=size))
    return o0 / 8, o1 / 8


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="test_24khz")
    ap.add_argument("--kbps", type=float, nargs="+", default=[6.0, 24.0])
    ap.add_argument("--lm", action="store_true", help="also EnCodec's LM coder (slow)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write one JSON object per row here")
    args = ap.parse_args()

    from tokpack.codec import engine
    from tokpack.codec.priors import default_prior
    from tokpack.codec.weights import load_model
    from tokpack.formats import coding, ctx, read_container, spec
    from tokpack.formats.prior import uniform_prior

    loaded = load_model(args.model)
    model_spec = loaded.spec
    shipped = default_prior(model_spec.name, loaded.weights_sha256)
    if shipped is None:
        print(f"no shipped prior for {model_spec.name} with these weights", file=sys.stderr)
    lm = None
    if args.lm:
        from tokpack.codecs.encodec.lm import lm_decode, lm_encode, load_lm

        lm = load_lm(model_spec.name)
    compressor = zstandard.ZstdCompressor(level=spec.ZSTD_LEVEL, write_content_size=True,
                                          write_checksum=False)
    out = open(args.json, "w") if args.json else None
    files = sorted(CORPUS.glob("*.wav"))
    cols = ["pack", "zstd", "ctx_uniform", "ctx_prior", *(["encodec_lm"] if lm else []),
            "order0", "order1"]
    print("| file | kbps | tokens | " + " | ".join(cols) + " | ctx_prior/order0 |")
    print("|---|---:|---:|" + "---:|" * (len(cols) + 1))
    totals: dict[float, dict[str, float]] = {}
    speeds: dict[tuple[str, float], list[float]] = {}
    for kbps in args.kbps:
        tot = totals.setdefault(kbps, dict.fromkeys(cols + ["tokens", "seconds"], 0.0))
        for path in files:
            buffer = io.BytesIO()
            engine.encode(path, buffer, model=loaded, bandwidth=kbps, threads=args.threads,
                          coder="pack")
            buffer.seek(0)
            container = read_container(buffer)
            header, tokens = container.header, container.tokens
            size, bits = header.codebook_size, header.bits_per_code
            n_q = header.n_codebooks
            per = header.frames_per_chunk
            row = dict.fromkeys(cols, 0.0)
            for start in range(0, tokens.shape[2], per):
                chunk = np.ascontiguousarray(tokens[:, :, start : start + per])
                row["pack"] += len(coding.pack(chunk.ravel(), bits))
                row["zstd"] += min(len(coding.encode(chunk, bits, name, compressor)[1])
                                   for name in ("zstd", "planes"))
                for name, prior in (("ctx_uniform", uniform_prior(size, n_q)),
                                    ("ctx_prior", shipped)):
                    if prior is None:
                        row[name] = float("nan")
                        continue
                    data, t_enc = timed(ctx.encode, chunk, prior, size)
                    back, t_dec = timed(ctx.decode, data, chunk.shape, prior, size)
                    assert back is not None and np.array_equal(back, chunk), (path, name)
                    row[name] += len(data)
                    speeds.setdefault((f"{name} encode", kbps), []).append(chunk.size / t_enc)
                    speeds.setdefault((f"{name} decode", kbps), []).append(chunk.size / t_dec)
                if lm is not None:
                    for s in range(chunk.shape[0]):
                        data, t_enc = timed(lm_encode, lm, chunk[s])
                        back, t_dec = timed(lm_decode, lm, data, n_q, chunk.shape[2])
                        assert np.array_equal(back, chunk[s]), (path, "lm")
                        row["encodec_lm"] += len(data)
                        speeds.setdefault(("encodec_lm encode", kbps), []).append(
                            chunk[s].size / t_enc)
                        speeds.setdefault(("encodec_lm decode", kbps), []).append(
                            chunk[s].size / t_dec)
            row["order0"], row["order1"] = bounds(tokens, size)
            ratio = row["ctx_prior"] / row["order0"]
            print(f"| {path.stem} | {kbps:g} | {tokens.size} | "
                  + " | ".join(f"{row[c]:.0f}" for c in cols) + f" | {ratio:.3f} |", flush=True)
            for c in cols:
                tot[c] += row[c]
            tot["tokens"] += tokens.size
            tot["seconds"] += tokens.shape[2] / header.frame_rate
            if out:
                out.write(json.dumps({"file": path.name, "model": model_spec.name, "kbps": kbps,
                                      "tokens": int(tokens.size), **row}) + "\n")
    print()
    print("| kbps | " + " | ".join(cols) + " |  (fraction of pack)")
    print("|---:|" + "---:|" * len(cols))
    for kbps, tot in totals.items():
        print(f"| {kbps:g} total bytes | " + " | ".join(f"{tot[c]:.0f}" for c in cols) + " |")
        print(f"| {kbps:g} / pack | " + " | ".join(f"{tot[c] / tot['pack']:.3f}" for c in cols)
              + " |")
        print(f"| {kbps:g} / order0 | "
              + " | ".join(f"{tot[c] / tot['order0']:.3f}" for c in cols) + " |")
    print()
    rate = {kbps: tot["tokens"] / tot["seconds"] for kbps, tot in totals.items()}
    print("| coder | kbps | median tokens/s | tokens per audio second | x real time |")
    print("|---|---:|---:|---:|---:|")
    for (name, kbps), values in speeds.items():
        median = float(np.median(values))
        print(f"| {name} | {kbps:g} | {median:.0f} | {rate[kbps]:.0f} | {median / rate[kbps]:.1f} |")
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
