"""Entropy coders on the corpus: bytes and speed of every token coder, against the bounds.

    python scripts/bench_entropy.py                       # test_24khz at 6 and 24 kbps
    python scripts/bench_entropy.py --model test_48khz --kbps 6 24 --lm
    python scripts/bench_entropy.py --json rows.ndjson
    python scripts/bench_entropy.py --contexts           # where the bits are: conditional
                                                         # entropies, every test model
    python scripts/bench_entropy.py --contexts --tokens a.tpk b.npy --codebook-size 1024

For each real corpus file (../shared/corpus/real) and bandwidth it encodes the audio once
(test model, 2 threads), then codes the same tokens, chunk by chunk as containers do, with:
bit-packing (PACK), the zstd mode (the smaller of PACK_ZSTD and PLANES_ZSTD per chunk, what
`--entropy zstd|planes|auto` did before CTX), CTX with the uniform prior, with the generic
prior (FORMAT.md "Generic priors": what encode uses where no prior was made), with the
model's shipped prior (tokpack/priors, trained on synthetic audio that shares nothing with
the corpus), and with --lm EnCodec's LM coder (a seeded random LM for the test models:
a speed anchor, not a quality one); the same three CTX priors with the models carried from
chunk to chunk (coder 4, a keyframe every 60 s as encode does, or --keyframe: "carry_*"); and the whole
default container (`--entropy auto`, carried models, header to END: "file_*"). Bounds, on
the same tokens: the order-0 entropy
(per file and codebook, static, table not paid) and the order-1 entropy (H(x_t | x_t-1),
same). Bytes are coded token bytes (chunk payloads without framing); speeds are tokens per
second of the coder alone, and x real time = tokens/s over the tokens of one audio second.
--concat codes all files' tokens as one long recording (the corpus files are 5-18 s: one or
two chunks each), --chunk-frames N cuts chunks of N frames (3: live packets).

--contexts measures where the remaining bits are, on the same files' tokens, for each test
model at its default and its highest bandwidth: the code length per token of c[k, t] (codebook
k, frame t) given nothing (order 0), the coarser codebook's code in the same frame c[k-1, t],
the previous frame's code c[k, t-1], and both. Two estimates each:
- in-sample: the empirical conditional entropy of all files together (a bound that overfits:
  with 1024 codes and 1024 contexts most (context, code) pairs are seen once);
- held-out: 2-fold cross-validation over files (even/odd), the held-out file coded by an
  adaptive model whose counts start from the training files' and grow as it codes:
  P(s | ctx) = (n(ctx, s) + u * P_lower(s)) / (n(ctx) + u) with u = b x the number of distinct
  codes seen in ctx (Witten-Bell: a context that has seen many codes backs off more; an
  unseen one is P_lower), backing off from both contexts to the mean of the two single ones,
  from each of those to order 0, and from order 0 (additive 1/2) to uniform: what a coder
  with a trained prior and adaptation can reach.
Codebook 0 has no coarser codebook: its "coarser" and "both" rows use what is left.
--contexts --tokens FILE ... measures any tokens instead (each file one unit of the split):
.tpk containers (encoded or `tokpack pack`ed; their codebook size from the header) or the
.npy/.pt arrays `tokpack pack` reads (--codebook-size N), e.g. an official model's tokens
encoded where its weights are.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
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


def conditional_bits(rows: list[np.ndarray], size: int) -> dict[str, float]:
    """In-sample empirical code length, bits summed over all tokens, of [K, T] code arrays
    (one per stream of each file), per context kind (see the module's doc)."""
    counts = {kind: {} for kind in CONTEXTS}
    for codes in rows:
        codes = codes.astype(np.int64)
        for k in range(codes.shape[0]):
            for kind, ctx in _contexts(codes, k, size).items():
                table = counts[kind].setdefault(k, [])
                table.append(ctx * size + codes[k])
    bits = {}
    for kind, per_k in counts.items():
        total = 0.0
        for parts in per_k.values():
            joint = np.concatenate(parts)
            pairs = np.unique(joint, return_counts=True)[1]
            ctx_counts = np.unique(joint // size, return_counts=True)[1]
            total += entropy_bits(pairs) - entropy_bits(ctx_counts)
        bits[kind] = total
    return bits


CONTEXTS = ("order0", "coarser", "previous", "both")


def _contexts(codes: np.ndarray, k: int, size: int) -> dict[str, np.ndarray]:
    """Each context kind's context number per frame of codebook k (0: none). The previous
    frame of frame 0 and the coarser codebook of codebook 0 are the extra value ``size``."""
    t = codes.shape[1]
    prev = np.concatenate([[size], codes[k, :-1]]) if t else codes[k]
    coarser = codes[k - 1] if k else np.full(t, size)
    return {"order0": np.zeros(t, np.int64), "coarser": coarser, "previous": prev,
            "both": coarser * (size + 1) + prev}


class _Adaptive:
    """Counts of (context, code) for one codebook and one context kind, and the backoff
    probability of a code (see the module's doc)."""

    def __init__(self, strength: float) -> None:
        self.b = strength
        self.pairs: dict[tuple[int, int], int] = {}
        self.ctx: dict[int, int] = {}
        self.distinct: dict[int, int] = {}

    def add(self, c: int, s: int) -> None:
        seen = self.pairs.get((c, s), 0)
        if not seen:
            self.distinct[c] = self.distinct.get(c, 0) + 1
        self.pairs[c, s] = seen + 1
        self.ctx[c] = self.ctx.get(c, 0) + 1

    def p(self, c: int, s: int, lower: float) -> float:
        n = self.ctx.get(c, 0)
        if not n:
            return lower
        u = self.b * self.distinct[c]
        return (self.pairs.get((c, s), 0) + u * lower) / (n + u)


def held_out_bits(train: list[np.ndarray], test: list[np.ndarray], size: int,
                  strength: float) -> dict[str, float]:
    """Bits to code the ``test`` arrays ([K, T] each) with adaptive backoff models trained
    on ``train`` and updated while coding (counts carried from file to file: the test files
    are coded one after another, as one long stream would be)."""
    n_k = max(a.shape[0] for a in train + test)
    models = [{kind: _Adaptive(strength) for kind in CONTEXTS} for _ in range(n_k)]
    for codes in train:
        codes = codes.astype(np.int64)
        for k in range(codes.shape[0]):
            ctx = _contexts(codes, k, size)
            m = models[k]
            for i, s in enumerate(codes[k].tolist()):
                for kind in CONTEXTS:
                    m[kind].add(int(ctx[kind][i]), s)
    bits = dict.fromkeys(CONTEXTS, 0.0)
    log2 = np.log2
    for codes in test:
        codes = codes.astype(np.int64)
        for k in range(codes.shape[0]):
            ctx = {kind: v.tolist() for kind, v in _contexts(codes, k, size).items()}
            m = models[k]
            o0, co, pr, bo = (m[kind] for kind in CONTEXTS)
            total = dict.fromkeys(CONTEXTS, 0.0)
            for i, s in enumerate(codes[k].tolist()):
                c_co, c_pr, c_bo = ctx["coarser"][i], ctx["previous"][i], ctx["both"][i]
                p0 = (o0.pairs.get((0, s), 0) + 0.5) / (o0.ctx.get(0, 0) + 0.5 * size)
                p_co = co.p(c_co, s, p0)
                p_pr = pr.p(c_pr, s, p0)
                p_bo = bo.p(c_bo, s, 0.5 * (p_co + p_pr))
                total["order0"] -= log2(p0)
                total["coarser"] -= log2(p_co)
                total["previous"] -= log2(p_pr)
                total["both"] -= log2(p_bo)
                o0.add(0, s)
                co.add(c_co, s)
                pr.add(c_pr, s)
                bo.add(c_bo, s)
            for kind in CONTEXTS:
                bits[kind] += total[kind]
    return bits


def tokens_of(path: Path, loaded, kbps: float, threads: int):
    """The container (bit-packed) of ``path`` encoded by ``loaded`` at ``kbps``, read back."""
    from tokpack.codec import engine
    from tokpack.formats import read_container

    buffer = io.BytesIO()
    engine.encode(path, buffer, model=loaded, bandwidth=kbps, threads=threads, coder="pack")
    buffer.seek(0)
    return read_container(buffer)


def contexts_table(args) -> None:
    """--contexts: the conditional-entropy table (module doc), of the test models' tokens of
    the corpus files, or of the token files given with --tokens."""
    if args.tokens:
        per_file, size = token_files(args.tokens, args.codebook_size)
        print(f"{len(per_file)} token files; bits per token; held-out: 2-fold over files, "
              f"Witten-Bell backoff x {args.strength:g}\n")
        print(CONTEXTS_HEAD)
        contexts_rows("tokens", "-", per_file, size, args.strength)
        return
    from tokpack.codec.weights import load_model

    files = sorted(CORPUS.glob("*.wav"))
    print(f"{len(files)} files of {CORPUS}; bits per token; held-out: 2-fold over files, "
          f"Witten-Bell backoff x {args.strength:g}\n")
    print(CONTEXTS_HEAD)
    for name in args.models:
        loaded = load_model(name)
        spec = loaded.spec
        rates = sorted({spec.default_bandwidth, max(spec.bandwidths)})
        for kbps in rates:
            per_file = []
            for path in files:
                container = tokens_of(path, loaded, kbps, args.threads)
                size = container.header.codebook_size
                per_file.append(list(container.tokens))  # one [K, T] array per stream
            contexts_rows(name, f"{kbps:g}", per_file, size, args.strength)


CONTEXTS_HEAD = ("| model | kbps | codebooks | tokens | estimate | order 0 | coarser c[k-1,t] | "
                 "previous c[k,t-1] | both | both / order 0 |\n"
                 "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")


def contexts_rows(name: str, kbps: str, per_file: list[list[np.ndarray]], size: int,
                  strength: float) -> None:
    """The in-sample and held-out rows of one token set: per file, its [K, T] arrays (one per
    stream) of codes in [0, size)."""
    arrays = [a for streams in per_file for a in streams]
    tokens = sum(a.size for a in arrays)
    results = {"in-sample": conditional_bits(arrays, size)}
    held = dict.fromkeys(CONTEXTS, 0.0)
    for fold in (0, 1):
        train = [a for i, st in enumerate(per_file) if i % 2 != fold for a in st]
        test = [a for i, st in enumerate(per_file) if i % 2 == fold for a in st]
        for kind, v in held_out_bits(train, test, size, strength).items():
            held[kind] += v
    results["held-out"] = held
    k = arrays[0].shape[0]
    for label, bits in results.items():
        print(f"| {name} | {kbps} | {k} | {tokens} | {label} | "
              + " | ".join(f"{bits[kind] / tokens:.3f}" for kind in CONTEXTS)
              + f" | {bits['both'] / bits['order0']:.3f} |", flush=True)


def token_files(names: list[str], codebook_size: int | None) -> tuple[list[list[np.ndarray]], int]:
    """--tokens: per file its [K, T] arrays (one per stream), and the codebook size. Containers
    (.tpk, any: encoded or packed) carry their codebook size; arrays (.npy, .pt, as `tokpack
    pack` reads them) take --codebook-size. All files must share one size and codebook count."""
    from tokpack.cli.pack_cmd import read_array
    from tokpack.formats import read_container
    from tokpack.formats.tokens import check_array

    if len(names) < 2:
        sys.exit("--tokens: at least 2 files (the held-out estimate trains on half of them)")
    per_file, sizes = [], set()
    for name in names:
        if name.lower().endswith(".tpk"):
            container = read_container(name)  # tokens [S, K, T]
            size, array = container.header.codebook_size, container.tokens
        else:
            if codebook_size is None:
                sys.exit(f"{name}: an array needs --codebook-size")
            size = codebook_size
            array = check_array(read_array(name), size)
        sizes.add(size)
        per_file.append([stream.astype(np.int64) for stream in array])  # [S, K, T] -> S x [K, T]
    if len(sizes) != 1 or len({a.shape[0] for st in per_file for a in st}) != 1:
        sys.exit("--tokens: the files differ in codebook size or codebook count")
    return per_file, sizes.pop()


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
    ap.add_argument("--concat", action="store_true",
                    help="code the files' tokens one after another, as one long recording")
    ap.add_argument("--keyframe", type=float, default=None, metavar="SECONDS",
                    help="keyframe interval of the carried models (default: encode's, 60 s)")
    ap.add_argument("--chunk-frames", type=int, default=0,
                    help="frames per chunk instead of the model's (3: live packets of 40 ms)")
    ap.add_argument("--contexts", action="store_true",
                    help="conditional entropies of every test model's tokens (module doc)")
    ap.add_argument("--models", nargs="+",
                    default=["test_24khz", "test_48khz", "test_mimi", "test_dac_44khz"],
                    help="with --contexts")
    ap.add_argument("--strength", type=float, default=1.0,
                    help="with --contexts: the backoff strength b (x distinct codes seen)")
    ap.add_argument("--tokens", nargs="+", metavar="FILE",
                    help="with --contexts: measure these token files instead of the test "
                         "models' tokens of the corpus (.tpk containers, or .npy/.pt arrays "
                         "[codebooks, frames] or [streams, codebooks, frames] as `tokpack "
                         "pack` reads them; each file one unit of the 2-fold split)")
    ap.add_argument("--codebook-size", type=int,
                    help="with --tokens: the codebook size of .npy/.pt arrays")
    args = ap.parse_args()
    if args.contexts:
        sys.path.insert(0, str(REPO))
        contexts_table(args)
        return 0

    from tokpack.codec.priors import default_prior
    from tokpack.codec.weights import load_model
    from tokpack.formats import coding, ctx, dumps, spec
    from tokpack.formats.prior import generic_prior, uniform_prior
    from tokpack.formats.writer import keyframe_chunks

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
    kinds = ("uniform", "generic", "prior")
    cols = ["pack", "zstd", *(f"{what}_{kind}" for what in ("ctx", "carry", "file") for kind in kinds),
            *(["encodec_lm"] if lm else []), "order0", "order1"]
    print("| file | kbps | tokens | " + " | ".join(cols) + " | ctx_prior/order0 |")
    print("|---|---:|---:|" + "---:|" * (len(cols) + 1))
    totals: dict[float, dict[str, float]] = {}
    speeds: dict[tuple[str, float], list[float]] = {}
    for kbps in args.kbps:
        tot = totals.setdefault(kbps, dict.fromkeys(cols + ["tokens", "seconds"], 0.0))
        items = [(path.name, tokens_of(path, loaded, kbps, args.threads)) for path in files]
        if args.concat:  # one long recording made of all the files, one after another
            first = items[0][1]
            items = [("all files, concatenated", dataclasses.replace(
                first, tokens=np.concatenate([c.tokens for _, c in items], axis=2)))]
        for name, container in items:
            header, tokens = container.header, container.tokens
            size, bits = header.codebook_size, header.bits_per_code
            n_q = header.n_codebooks
            per = args.chunk_frames or header.frames_per_chunk
            whole_files = not (args.concat or args.chunk_frames)  # whole containers to write
            row = dict.fromkeys(cols, 0.0)
            keyframe = keyframe_chunks(dataclasses.replace(header, frames_per_chunk=per)
                                       if args.chunk_frames and not header.segmented else header,
                                       args.keyframe)
            carries = {kind: ctx.Carry(size, header.n_streams, n_q) for kind in kinds}
            priors = {"uniform": uniform_prior(size, n_q), "generic": generic_prior(size, n_q),
                      "prior": shipped}
            for start in range(0, tokens.shape[2], per):
                chunk = np.ascontiguousarray(tokens[:, :, start : start + per])
                row["pack"] += len(coding.pack(chunk.ravel(), bits))
                row["zstd"] += min(len(coding.encode(chunk, bits, name, compressor)[1])
                                   for name in ("zstd", "planes"))
                for kind, prior in priors.items():
                    if prior is None:
                        row[f"ctx_{kind}"] = row[f"carry_{kind}"] = float("nan")
                        continue
                    for col, carry in ((f"ctx_{kind}", None), (f"carry_{kind}", carries[kind])):
                        fresh = carry is None or start // per % keyframe == 0
                        rows = None if fresh else carry.begin()
                        data, t_enc = timed(ctx.encode, chunk, prior, size, rows)
                        back, t_dec = timed(ctx.decode, data, chunk.shape, prior, size,
                                            None if fresh else carry.begin())
                        assert back is not None and np.array_equal(back, chunk), (name, col)
                        if carry is not None:
                            carry.end(chunk, spec.Coder.CTX if fresh else spec.Coder.CTX_CARRY,
                                      prior, keyframe=fresh, rows=rows)
                        row[col] += len(data)
                        speeds.setdefault((f"{col} encode", kbps), []).append(chunk.size / t_enc)
                        speeds.setdefault((f"{col} decode", kbps), []).append(chunk.size / t_dec)
                if lm is not None:
                    for s in range(chunk.shape[0]):
                        data, t_enc = timed(lm_encode, lm, chunk[s])
                        back, t_dec = timed(lm_decode, lm, data, n_q, chunk.shape[2])
                        assert np.array_equal(back, chunk[s]), (name, "lm")
                        row["encodec_lm"] += len(data)
                        speeds.setdefault(("encodec_lm encode", kbps), []).append(
                            chunk[s].size / t_enc)
                        speeds.setdefault(("encodec_lm decode", kbps), []).append(
                            chunk[s].size / t_dec)
            for kind, prior in priors.items():
                # the whole default container (coder auto, carried models), header to END
                row[f"file_{kind}"] = float("nan") if prior is None or not whole_files else len(dumps(
                    header, tokens, scales=container.scales,
                    segment_frames=container.segment_frames, prior=prior,
                    keyframe=keyframe))
            row["order0"], row["order1"] = bounds(tokens, size)
            ratio = row["ctx_prior"] / row["order0"]
            print(f"| {name} | {kbps:g} | {tokens.size} | "
                  + " | ".join(f"{row[c]:.0f}" for c in cols) + f" | {ratio:.3f} |", flush=True)
            for c in cols:
                tot[c] += row[c]
            tot["tokens"] += tokens.size
            tot["seconds"] += tokens.shape[2] / header.frame_rate
            if out:
                out.write(json.dumps({"file": name, "model": model_spec.name, "kbps": kbps,
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
