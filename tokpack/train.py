"""Train CTX priors (``.tpp``) from tokens: numpy only, no model needed.

The order-0 tables are the smoothed code counts of the training files; a codebook gets a
neighbour model when neighbour lists are given for it (the codec layer derives them from
the codebook vectors) and cross-validation says it pays. The strengths and mix weights are
chosen by leave-files-out cross-validation of the coder's own code lengths
(:func:`tokpack.formats.ctx.row_bits`), so a prior never claims more than held-out files
show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tokpack.formats import ctx, spec
from tokpack.formats.prior import CodebookPrior, Prior, table, uniform_prior

STRENGTHS = (16, 64, 256, 1024, 4096)
MIXES = (0, 32, 64, 96, 128, 176)
MAX_FOLDS = 8
# A neighbour model is decoded symbol by symbol (the order-0 model a block at a time): keep
# one only where it saves at least this fraction of the codebook's held-out bits.
MIN_NEIGHBOUR_GAIN = 0.005


@dataclasses.dataclass
class Report:
    """What training chose per codebook, with held-out bits per token for each choice."""

    n_files: int
    n_tokens: int
    folds: int
    strength: list[int]
    mix: list[int]
    heldout_bits: list[float]  # per token, chosen setting, files held out
    uniform_bits: list[float]  # per token, the built-in uniform prior, same files


def _rows(files: Sequence[np.ndarray], k: int, frames_per_chunk: int):
    """(file index, row) for every chunk-row of codebook ``k``."""
    for i, tokens in enumerate(files):
        for s in range(tokens.shape[0]):
            for start in range(0, tokens.shape[2], frames_per_chunk):
                yield i, tokens[s, k, start : start + frames_per_chunk].astype(np.int64)


def _rank_counts(row: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    n = neighbours.shape[1]
    ranks = ctx._ranks(row, np.concatenate([[-1], row[:-1]]), neighbours)
    return np.bincount(ranks[ranks < n], minlength=n)


def successor_neighbours(files: Sequence[np.ndarray], n_codebooks: int, codebook_size: int,
                         n_neighbours: int) -> list[np.ndarray | None]:
    """Neighbour lists from the tokens alone (no codebook vectors: a codec tokpack does not
    run): for each code the codes that most often follow it in ``files``, then the most
    common codes; M distinct codes per row (None where M would be 0)."""
    m = min(n_neighbours, codebook_size - 1)
    if m <= 0:
        return [None] * n_codebooks
    lists = []
    for k in range(n_codebooks):
        rows_of = [row for tokens in files for row in tokens[:, k].astype(np.int64)]
        overall = sum((np.bincount(row, minlength=codebook_size) for row in rows_of),
                      np.zeros(codebook_size, np.int64))
        common = np.argsort(-overall, kind="stable")  # most common first, low codes on ties
        pairs = np.concatenate([row[:-1] * codebook_size + row[1:] for row in rows_of] or [np.zeros(0, np.int64)])
        pair, count = np.unique(pairs, return_counts=True)
        prev, nxt = pair // codebook_size, pair % codebook_size
        order = np.lexsort((nxt, -count, prev))  # by code, then most frequent successor
        prev, nxt = prev[order], nxt[order]
        starts = np.searchsorted(prev, np.arange(codebook_size + 1))
        table = np.empty((codebook_size, m), np.int64)
        for x in range(codebook_size):
            chosen = dict.fromkeys(int(c) for c in nxt[starts[x] : starts[x + 1]][:m])
            for c in common:
                if len(chosen) == m:
                    break
                chosen.setdefault(int(c))
            table[x] = list(chosen)
        lists.append(table)
    return lists


def train(files: Sequence[np.ndarray], *, codebook_size: int, model_id: str,
          weights_sha256: bytes, neighbours: Sequence[np.ndarray | None] | None = None,
          frames_per_chunk: int = 750) -> tuple[Prior, Report]:
    """A prior for tokens like ``files`` (each [n_streams, n_codebooks, n_frames], all with
    the same codebooks); ``neighbours[k]`` is an int array [codebook_size, M] or None."""
    if not files:
        raise ValueError("no training files")
    n_codebooks = min(f.shape[1] for f in files)
    n_files = len(files)
    folds = min(n_files, MAX_FOLDS)
    fold_of = np.arange(n_files) % folds
    books, report = [], Report(n_files, int(sum(f[:, :n_codebooks].size for f in files)), folds,
                               [], [], [], [])
    for k in range(n_codebooks):
        rows = list(_rows(files, k, frames_per_chunk))
        counts = np.zeros((folds, codebook_size), np.int64)
        nb = None if neighbours is None else neighbours[k]
        n_nb = 0 if nb is None else nb.shape[1]
        ranks = np.zeros((folds, n_nb), np.int64)
        for i, row in rows:
            counts[fold_of[i]] += np.bincount(row, minlength=codebook_size)
            if n_nb:
                ranks[fold_of[i]] += _rank_counts(row, nb)

        def book_for(strength, mix, without=None):
            keep = np.arange(folds) != without if without is not None else slice(None)
            order0 = table(2 * counts[keep].sum(axis=0) + 1)
            if not mix:
                return CodebookPrior(strength=strength, order0=order0)
            return CodebookPrior(strength=strength, order0=order0, mix=mix,
                                 rank_strength=strength,
                                 ranks=table(2 * ranks[keep].sum(axis=0) + 1), neighbours=nb)

        def heldout(strength, mix):
            if folds == 1:  # one file: no held-out data, take the setting on the file itself
                return sum(ctx.row_bits(row, book_for(strength, mix), codebook_size)
                           for _, row in rows)
            fold_books = [book_for(strength, mix, f) for f in range(folds)]
            return sum(ctx.row_bits(row, fold_books[fold_of[i]], codebook_size)
                       for i, row in rows)

        scores = {s: heldout(s, 0) for s in STRENGTHS}
        strength = min(scores, key=scores.get)
        best_mix, best = 0, scores[strength]
        for mix in MIXES[1:] if n_nb else ():
            bits = heldout(strength, mix)
            if bits < best:
                best_mix, best = mix, bits
        if best > (1 - MIN_NEIGHBOUR_GAIN) * scores[strength]:
            best_mix, best = 0, scores[strength]  # not worth decoding symbol by symbol
        books.append(book_for(strength, best_mix))
        n = sum(len(row) for _, row in rows)
        uniform = uniform_prior(codebook_size, 1).codebooks[0]
        report.strength.append(strength)
        report.mix.append(best_mix)
        report.heldout_bits.append(best / n)
        report.uniform_bits.append(sum(ctx.row_bits(r, uniform, codebook_size)
                                       for _, r in rows) / n)
    prior = Prior(model_id=model_id, weights_sha256=weights_sha256,
                  codebook_size=codebook_size, codebooks=tuple(books))
    return prior, report


#: strength of the order-0 tables :func:`prior_gain` learns (the middle of STRENGTHS)
GAIN_STRENGTH = 256


def prior_gain(tokens: np.ndarray, codebook_size: int, prior: Prior, *, frames_per_chunk: int,
               keyframe: int = 1) -> float | None:
    """An estimate of what a prior trained for these tokens' model would save: the fraction
    of CTX bytes the second half of ``tokens`` [S, K, T] loses when coded (chunks of
    ``frames_per_chunk``, models carried, a keyframe every ``keyframe`` chunks, as a writer
    codes them) from order-0 tables learned on the first half instead of from ``prior``.
    Order-0 tables only (a trained prior may add neighbour models), learned on the same
    recording (a trained prior learns from others): measured within 0-3 points of what the
    test models' shipped priors save (docs/ENTROPY.md). None for fewer than 32 frames."""
    half = tokens.shape[2] // 2
    if half < 16:
        return None
    first, second = tokens[:, :, :half], tokens[:, :, half:]
    books = tuple(
        CodebookPrior(strength=GAIN_STRENGTH,
                      order0=table(2 * np.bincount(first[:, k].ravel(), minlength=codebook_size) + 1))
        for k in range(tokens.shape[1]))
    learned = Prior(model_id="estimate", weights_sha256=bytes(32), codebook_size=codebook_size,
                    codebooks=books)
    now, then = (_ctx_bytes(second, p, codebook_size, frames_per_chunk, keyframe)
                 for p in (prior, learned))
    return 1.0 - then / now


def _ctx_bytes(tokens: np.ndarray, prior: Prior, size: int, per: int, keyframe: int) -> int:
    """Bytes of ``tokens`` coded with CTX chunk by chunk, the models carried between keyframes."""
    carry = ctx.Carry(size, tokens.shape[0], tokens.shape[1])
    total = 0
    for i, start in enumerate(range(0, tokens.shape[2], per)):
        chunk = np.ascontiguousarray(tokens[:, :, start : start + per])
        fresh = i % max(keyframe, 1) == 0
        rows = None if fresh else carry.begin()
        total += len(ctx.encode(chunk, prior, size, rows))
        carry.end(chunk, spec.Coder.CTX if fresh else spec.Coder.CTX_CARRY, prior,
                  keyframe=fresh, rows=rows)
    return total
