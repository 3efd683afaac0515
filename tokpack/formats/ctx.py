"""The CTX coder (TOKENS coder 3, docs/FORMAT.md "CTX coder"): adaptive context models,
range-coded with constriction's range coder.

Each (stream, codebook) row of a chunk is coded on its own, frame blocks of CTX_BLOCK at a
time. Its model mixes an order-0 distribution (the prior's, plus the counts of the blocks
already coded) with, where the prior has one, a neighbour model: the code of the previous
frame predicts its prior-listed neighbours, by rank, with rank counts that adapt too. Every
table is an integer array; constriction gets frequencies that already sum to
2^CTX_PRECISION minus the alphabet size, which it uses exactly (each plus one), so no
floating-point rounding reaches the coded bits.

Coder 4 (CTX_CARRY, FORMAT.md "Carried models") codes the same way from the models the
previous chunk left (:class:`Carry`), halving old counts as they grow.

Coding runs in the compiled ``tokpack.formats._ctxcoder`` (the same bytes, 20-100x faster:
a symbol costs O(neighbours + log codes) there, a table here); where it was not built (no C
compiler at install) the numpy + constriction code below does the work, and it stays the
reference the compiled coder is tested against.
"""

from __future__ import annotations

import numpy as np

from tokpack.formats import spec
from tokpack.formats.prior import CodebookPrior, Prior

try:
    from tokpack.formats import _ctxcoder as compiled
except ImportError:  # not built: constriction codes (ctx.compiled None)
    compiled = None

_FREE_TOTAL = 1 << spec.CTX_PRECISION  # constriction adds one to every frequency


def min_bytes(shape: tuple[int, int, int], codebook_size: int) -> int:
    """The fewest bytes CTX data of tokens [n_streams, n_codebooks, n_frames] may take
    (FORMAT.md "Reader limits"), so that decoding work per byte stays bounded however well
    the tokens compress: a block of CTX_BLOCK frames of a row costs a model of the whole
    table, so the floor counts every row's blocks as full ones."""
    n_streams, n_codebooks, n_frames = shape
    slots = n_streams * n_codebooks * -(-n_frames // spec.CTX_BLOCK) * spec.CTX_BLOCK
    unit = spec.CTX_TABLE_UNIT
    return -(-slots * max(codebook_size, unit) // (8 * unit))


def quantize(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` (last axis) summing to ``total``: floors, then
    the remainder to the largest (first on ties). ``weights * total`` must fit in int64."""
    weights = np.asarray(weights, dtype=np.int64)
    return _spread(weights, weights.sum(axis=-1, keepdims=True), total)


def _spread(weights: np.ndarray, weight_sum: int, total: int) -> np.ndarray:
    """:func:`quantize` with the weights' sum known beforehand."""
    out = weights * total // weight_sum
    rest = total - out.sum(axis=-1)
    if out.ndim == 1:
        out[out.argmax()] += rest
    else:
        out[np.arange(out.shape[0]), out.argmax(axis=-1)] += rest
    return out


class _Row:
    """The adaptive model of one (stream, codebook) row: fresh (``halve`` False, coder 3),
    or carried on from a previous chunk (coder 4, which halves the counts as they grow)."""

    def __init__(self, book: CodebookPrior, size: int, *, halve: bool = False) -> None:
        self.book = book
        self.size = size
        self.free = _FREE_TOTAL - size
        self.counts = np.zeros(size, np.int64)
        n = book.n_neighbours
        self.rank_counts = np.zeros(n, np.int64)
        self.neighbours = book.neighbours
        self.prev = -1  # the row's last token so far (-1: none yet)
        self.mass = 0  # frames counted (halved with the counts)
        self.halve = halve

    def carried(self) -> _Row:
        """A copy that goes on as coder 4 does."""
        row = _Row(self.book, self.size, halve=True)
        row.counts, row.rank_counts = self.counts.copy(), self.rank_counts.copy()
        row.prev, row.mass = self.prev, self.mass
        return row

    def order0(self) -> np.ndarray:
        """Frequencies (summing to ``free``) for the next block, without context."""
        weights = self.book.strength * self.book.order0 + self.counts * spec.PRIOR_ONE
        return quantize(weights, self.free)

    def mixing(self, order0: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """For a block: the order-0 part and the rank part of the mixed weights, and their
        total (the same for every symbol of the block)."""
        book = self.book
        ranks = quantize(book.rank_strength * book.ranks + self.rank_counts * spec.PRIOR_ONE,
                         _FREE_TOTAL)
        base = (spec.PRIOR_MIX_ONE - book.mix) * order0
        extra = book.mix * ranks
        return base, extra, int(base.sum() + extra.sum())

    def mixed(self, mixing, prevs: np.ndarray) -> np.ndarray:
        """Frequencies [len(prevs), size] for symbols whose previous frame's codes are ``prevs``."""
        base, extra, total = mixing
        rows = np.repeat(base[np.newaxis], len(prevs), 0)
        # a code's neighbours are distinct, so no (row, column) pair repeats
        rows[np.arange(len(prevs))[:, np.newaxis], self.neighbours[prevs]] += extra
        return _spread(rows, total, self.free)

    def mixed_one(self, mixing, prev: int) -> np.ndarray:
        """:meth:`mixed` for one symbol (the decoder's sequential path), same numbers."""
        base, extra, total = mixing
        row = base.copy()
        row[self.neighbours[prev]] += extra
        return _spread(row, total, self.free)

    def update(self, block: np.ndarray, ranks: np.ndarray | None) -> None:
        self.counts += np.bincount(block, minlength=self.size)
        if ranks is not None:
            n = self.book.n_neighbours
            self.rank_counts += np.bincount(ranks[ranks < n], minlength=n)
        self.prev = int(block[-1])
        self.mass += len(block)
        if self.halve and self.mass > spec.CTX_HALVE_ABOVE:
            self.counts -= self.counts >> 1
            self.rank_counts -= self.rank_counts >> 1
            self.mass -= self.mass >> 1

    def predecessors(self, row: np.ndarray) -> np.ndarray:
        """Each frame's previous token: ``prev`` (maybe -1, none) for the first."""
        return np.concatenate([[self.prev], row[:-1]])


def _ranks(row: np.ndarray, preds: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Rank of each code among its predecessor's neighbours (M if not among them, or if it
    has no predecessor: ``preds`` -1)."""
    n = neighbours.shape[1]
    hit = neighbours[np.maximum(preds, 0)] == row[:, np.newaxis]
    return np.where(hit.any(axis=1) & (preds >= 0), hit.argmax(axis=1), n)


class Carry:
    """The models a file's TOKENS chunks leave for the next (FORMAT.md "Carried models").
    Call :meth:`end` after every chunk, in order (:meth:`lose` for a chunk that could not be
    read); :meth:`begin` gives the models a coder-4 chunk starts from (fresh copies: coding
    changes them, and the chunk hands them back to :meth:`end`)."""

    def __init__(self, codebook_size: int, n_streams: int, n_codebooks: int) -> None:
        self.size = codebook_size
        self.n_rows = n_streams * n_codebooks
        self.n_codebooks = n_codebooks
        self._rows: list[_Row] | None = None  # after the last chunk; None: not known

    def begin(self) -> list[_Row] | None:
        """The models after the last chunk, as coder 4 starts from them; None when they
        are not known (no chunk yet, or one was lost since the last keyframe)."""
        return None if self._rows is None else [row.carried() for row in self._rows]

    def end(self, tokens: np.ndarray, coder: int, prior: Prior | None, *,
            keyframe: bool | None, rows: list[_Row] | None = None) -> None:
        """The chunk ``tokens`` [S, K, T] was coded with ``coder``: for coder 4, ``rows`` are
        its models after coding (from :meth:`begin`). ``keyframe``: whether the chunk's
        index made it start afresh (None: not known, as in salvage after a gap of unknown
        size). Without the ``prior`` (not available) the models are not known."""
        if coder == spec.Coder.CTX_CARRY:
            if rows is None or len(rows) != self.n_rows:
                raise ValueError("a coder-4 chunk hands back its models")
            self._rows = rows
        elif prior is None:
            self._rows = None
        elif coder == spec.Coder.CTX:  # always at a keyframe, and never halves
            self._rows = _advance(self._fresh(prior, halve=False), tokens)
        else:  # coders 0-2 leave what coding their tokens with coder 4 would
            start = (self._fresh(prior, halve=True) if keyframe else None if keyframe is None
                     else self.begin())
            self._rows = None if start is None else _advance(start, tokens)

    def lose(self) -> None:
        """The chunk was lost: the models after it are not known."""
        self._rows = None

    def _fresh(self, prior: Prior, *, halve: bool) -> list[_Row]:
        _check((1, self.n_codebooks, 0), prior, self.size)
        return [_Row(prior.codebooks[i % self.n_codebooks], self.size, halve=halve)
                for i in range(self.n_rows)]


def _advance(rows: list[_Row], tokens: np.ndarray) -> list[_Row]:
    """``rows`` after the CTX update over ``tokens`` [S, K, T], block by block, as coding
    them would leave them, without coding. Every row gets every frame, so the rows share
    their mass and the blocks after which their counts halve: the counts between two
    halvings are added at once, for all rows (a few operations per token, however many
    rows and blocks a chunk has)."""
    n_rows = len(rows)
    toks = tokens.reshape(n_rows, -1).astype(np.int64)
    n_frames, size = toks.shape[1], rows[0].size
    if len({(row.mass, row.halve) for row in rows}) != 1:
        raise ValueError("the rows of a chunk share their mass")
    mass, halve = rows[0].mass, rows[0].halve
    ends = []  # (frame after which the counts are added, whether they halve then)
    for start in _blocks(n_frames):
        mass += min(spec.CTX_BLOCK, n_frames - start)
        if halve and mass > spec.CTX_HALVE_ABOVE:
            mass -= mass >> 1
            ends.append((min(start + spec.CTX_BLOCK, n_frames), True))
    if not ends or ends[-1][0] < n_frames:
        ends.append((n_frames, False))
    mixed = [i for i, row in enumerate(rows) if row.book.mix]
    width = max((rows[i].book.n_neighbours for i in mixed), default=0) + 1  # + "not a neighbour"
    ranks = np.stack([_ranks(toks[i], rows[i].predecessors(toks[i]), rows[i].neighbours)
                      for i in mixed]) if mixed else np.zeros((0, n_frames), np.int64)
    counts = np.stack([row.counts for row in rows])
    rank_counts = np.zeros((len(mixed), width), np.int64)
    for j, i in enumerate(mixed):
        rank_counts[j, : rows[i].book.n_neighbours] = rows[i].rank_counts
    row_offsets = (np.arange(n_rows) * size)[:, np.newaxis]
    rank_offsets = (np.arange(len(mixed)) * width)[:, np.newaxis]
    begin = 0
    for end, halves in ends:
        counts += np.bincount((toks[:, begin:end] + row_offsets).ravel(),
                              minlength=n_rows * size).reshape(n_rows, size)
        if mixed:
            rank_counts += np.bincount((ranks[:, begin:end] + rank_offsets).ravel(),
                                       minlength=len(mixed) * width).reshape(len(mixed), width)
        if halves:
            counts -= counts >> 1
            rank_counts -= rank_counts >> 1
        begin = end
    for i, row in enumerate(rows):
        row.counts, row.prev, row.mass = counts[i].copy(), int(toks[i, -1]), mass
    for j, i in enumerate(mixed):
        rows[i].rank_counts = rank_counts[j, : rows[i].book.n_neighbours].copy()
    return rows


def _check(tokens_shape: tuple[int, int, int], prior: Prior, codebook_size: int) -> None:
    if prior.codebook_size != codebook_size or prior.n_codebooks < tokens_shape[1]:
        raise ValueError(
            f"the prior is for {prior.n_codebooks} codebook(s) of {prior.codebook_size} codes; "
            f"these tokens have {tokens_shape[1]} of {codebook_size}"
        )


def _plan(tokens_shape, prior, rows: list[_Row] | None = None):
    """(stream, codebook, row model) in coding order: fresh models, or ``rows`` (coder 4)."""
    n_streams, n_codebooks, _ = tokens_shape
    if rows is not None and len(rows) != n_streams * n_codebooks:
        raise ValueError(f"{len(rows)} row models for {n_streams * n_codebooks} rows")
    for s in range(n_streams):
        for k in range(n_codebooks):
            yield s, k, (_Row(prior.codebooks[k], prior.codebook_size) if rows is None
                         else rows[s * n_codebooks + k])


def _blocks(n_frames: int):
    return range(0, n_frames, spec.CTX_BLOCK)


def encode(tokens: np.ndarray, prior: Prior, codebook_size: int,
           rows: list[_Row] | None = None) -> bytes:
    """Code tokens [n_streams, n_codebooks, n_frames] (uint16 below ``codebook_size``):
    coder 3, or coder 4 from ``rows`` (:meth:`Carry.begin`, which this changes)."""
    _check(tokens.shape, prior, codebook_size)
    if compiled is not None:
        return _compiled_encode(tokens, prior, codebook_size, rows)
    import constriction

    model = constriction.stream.model
    family = model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    n_frames = tokens.shape[2]
    for s, k, row_model in _plan(tokens.shape, prior, rows):
        row = tokens[s, k].astype(np.int64)
        preds = row_model.predecessors(row)
        ranks = _ranks(row, preds, row_model.neighbours) if row_model.book.mix else None
        for start in _blocks(n_frames):
            block = row[start : start + spec.CTX_BLOCK]
            order0 = row_model.order0()
            if ranks is None:
                encoder.encode(block.astype(np.int32),
                               model.Categorical(order0.astype(np.float64), perfect=False))
            else:
                freqs = _block_rows(row_model, order0, preds[start : start + len(block)])
                encoder.encode(block.astype(np.int32), family, freqs.astype(np.float64))
            row_model.update(block, None if ranks is None else ranks[start : start + len(block)])
    return encoder.get_compressed().astype("<u4").tobytes()


def _block_rows(row_model: _Row, order0: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Frequencies of a block's symbols with the neighbour model, given their predecessors
    (a row's first frame may have none, -1: order-0 alone)."""
    mixing = row_model.mixing(order0)
    if preds[0] >= 0:
        return row_model.mixed(mixing, preds)
    first = order0[np.newaxis]
    return first if len(preds) == 1 else np.concatenate([first, row_model.mixed(mixing, preds[1:])])


def decode(data: bytes, shape: tuple[int, int, int], prior: Prior,
           codebook_size: int, rows: list[_Row] | None = None) -> np.ndarray | None:
    """Inverse of :func:`encode` (coder 4 with ``rows``, which this changes); None if
    ``data`` is not a whole number of 32-bit words or holds words after the last symbol
    (the caller reports where)."""
    _check(shape, prior, codebook_size)
    if len(data) % 4:
        return None
    if compiled is not None:
        return _compiled_decode(data, shape, prior, codebook_size, rows)
    import constriction

    model = constriction.stream.model
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4")
                                                     .astype(np.uint32))
    tokens = np.zeros(shape, np.uint16)
    n_frames = shape[2]
    for s, k, row_model in _plan(shape, prior, rows):
        row = np.zeros(n_frames, np.int64)
        mix = row_model.book.mix
        for start in _blocks(n_frames):
            n = min(spec.CTX_BLOCK, n_frames - start)
            order0 = row_model.order0()
            if not mix:
                block = decoder.decode(model.Categorical(order0.astype(np.float64),
                                                         perfect=False), n)
                row[start : start + n] = block
                row_model.update(row[start : start + n], None)
                continue
            mixing = row_model.mixing(order0)
            pred = row_model.prev  # the last code before the block (-1: none)
            for t in range(start, start + n):
                freqs = order0 if pred < 0 else row_model.mixed_one(mixing, pred)
                row[t] = pred = decoder.decode(model.Categorical(freqs.astype(np.float64),
                                                                 perfect=False))
            block = row[start : start + n]
            row_model.update(block, _ranks(block, row_model.predecessors(block),
                                           row_model.neighbours))
        tokens[s, k] = row
    if not decoder.maybe_exhausted():
        return None
    return tokens


def _compiled_state(shape, prior: Prior, size: int, rows: list[_Row] | None):
    """The arguments of ``_ctxcoder`` after the tokens: books, and the rows' state as arrays
    it updates in place (fresh for coder 3, copied from ``rows`` for coder 4)."""
    n_streams, n_codebooks, _ = shape
    n_rows = n_streams * n_codebooks
    if rows is not None and len(rows) != n_rows:
        raise ValueError(f"{len(rows)} row models for {n_rows} rows")
    books = prior.codebooks[:n_codebooks]
    width = max(max(book.n_neighbours for book in books), 1)
    args = tuple(
        (np.ascontiguousarray(book.order0, np.int64), int(book.strength),
         np.ascontiguousarray(book.neighbours, np.int64) if book.mix else None,
         np.ascontiguousarray(book.ranks, np.int64), int(book.rank_strength), int(book.mix))
        for book in books)
    row_book = np.tile(np.arange(n_codebooks, dtype=np.int64), n_streams)
    rank_counts = np.zeros((n_rows, width), np.int64)
    if rows is None:
        counts = np.zeros((n_rows, size), np.int64)
        prev, mass, halve = np.full(n_rows, -1, np.int64), np.zeros(n_rows, np.int64), False
    else:
        counts = np.stack([row.counts for row in rows])  # int64, a copy the coder changes
        for i, row in enumerate(rows):
            rank_counts[i, : len(row.rank_counts)] = row.rank_counts
        prev = np.array([row.prev for row in rows], np.int64)
        mass = np.array([row.mass for row in rows], np.int64)
        halve = rows[0].halve
        if any(row.halve != halve for row in rows):
            raise ValueError("the rows of a chunk halve alike")
    return (size, n_rows, shape[2], args, row_book, counts, rank_counts, prev, mass,
            spec.CTX_HALVE_ABOVE if halve else -1)


def _compiled_store(rows: list[_Row] | None, state) -> None:
    """Hands the state the compiled coder left back to ``rows`` (coder 4)."""
    if rows is None:
        return
    counts, rank_counts, prev, mass = state[5:9]
    for i, row in enumerate(rows):
        row.counts, row.rank_counts = counts[i], rank_counts[i, : len(row.rank_counts)].copy()
        row.prev, row.mass = int(prev[i]), int(mass[i])


def _compiled_encode(tokens: np.ndarray, prior: Prior, size: int, rows) -> bytes:
    state = _compiled_state(tokens.shape, prior, size, rows)
    flat = np.ascontiguousarray(tokens, np.int64).reshape(state[1], state[2])
    data = compiled.encode(flat, *state)
    _compiled_store(rows, state)
    return data


def _compiled_decode(data: bytes, shape, prior: Prior, size: int, rows) -> np.ndarray | None:
    state = _compiled_state(shape, prior, size, rows)
    tokens = np.zeros((state[1], state[2]), np.int64)
    if not compiled.decode(data, tokens, *state):
        return None
    _compiled_store(rows, state)
    return tokens.reshape(shape).astype(np.uint16)


def code_lengths(tokens: np.ndarray, prior: Prior, codebook_size: int) -> np.ndarray:
    """Ideal bits [n_streams, n_codebooks] of coding ``tokens`` with this model (the coded
    size is within a few words of their sum); used to train priors and in benchmarks."""
    _check(tokens.shape, prior, codebook_size)
    bits = np.zeros(tokens.shape[:2])
    for s, k, row_model in _plan(tokens.shape, prior):
        bits[s, k] = row_bits(tokens[s, k], row_model.book, codebook_size)
    return bits


def row_bits(row: np.ndarray, book: CodebookPrior, codebook_size: int) -> float:
    """Ideal bits of one (stream, codebook) row of a chunk coded from ``book``."""
    row_model = _Row(book, codebook_size)
    row = row.astype(np.int64)
    preds = row_model.predecessors(row)
    ranks = _ranks(row, preds, row_model.neighbours) if book.mix else None
    bits = 0.0
    for start in _blocks(len(row)):
        block = row[start : start + spec.CTX_BLOCK]
        order0 = row_model.order0()
        if ranks is None:
            freq = order0[block]
        else:
            freqs = _block_rows(row_model, order0, preds[start : start + len(block)])
            freq = freqs[np.arange(len(block)), block]
        bits += float(-np.log2((freq + 1) / _FREE_TOTAL).sum())
        row_model.update(block, None if ranks is None else ranks[start : start + len(block)])
    return bits
