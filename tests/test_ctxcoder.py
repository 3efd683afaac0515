"""tokpack.formats._ctxcoder, the compiled CTX coder: the same bytes, tokens and carried
models as the numpy + constriction reference in tokpack/formats/ctx.py, on clean and
damaged data. Fails where the extension was not built (CI always builds it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokpack.formats import _ctxcoder, ctx, spec
from tokpack.formats.prior import CodebookPrior, Prior, table, uniform_prior


def near(size: int, m: int) -> np.ndarray:
    offsets = np.array([0] + [s * d for d in range(1, m) for s in (1, -1)][: m - 1])
    return (np.arange(size)[:, np.newaxis] + offsets) % size


def some_prior(rng: np.random.Generator, size: int, n_codebooks: int, n_neighbours: int,
               style: str = "skewed") -> Prior:
    """Order-0 tables ``skewed``, ``flat`` (equal, with equal rank weights: every neighbour
    ties) or ``near`` (a few values: codes tie for the largest, and some rank weights are
    zero, so a neighbour may tie with the largest other code); a neighbour model of
    n_neighbours codes (0: none) on every other codebook."""
    books = []
    for k in range(n_codebooks):
        weights = {"skewed": lambda: rng.integers(1, 1000, size) ** 2,
                   "flat": lambda: np.ones(size, np.int64),
                   "near": lambda: rng.integers(1000, 1003, size)}[style]()
        ranks = {"skewed": lambda: rng.integers(1, 100, n_neighbours),
                 "flat": lambda: np.ones(n_neighbours, np.int64),
                 "near": lambda: np.maximum(rng.integers(0, 3, n_neighbours),
                                            np.arange(n_neighbours) == 0)}[style]()
        if n_neighbours and k % 2 == 0:
            books.append(CodebookPrior(
                strength=int(rng.integers(1, 64)), order0=table(weights),
                mix=int(rng.integers(1, 256)), rank_strength=int(rng.integers(1, 64)),
                ranks=table(ranks), neighbours=near(size, n_neighbours)))
        else:
            books.append(CodebookPrior(strength=int(rng.integers(1, 64)), order0=table(weights)))
    return Prior("test_24khz", bytes(32), size, tuple(books))


def some_tokens(rng: np.random.Generator, shape, size: int) -> np.ndarray:
    """Random codes, or a walk that mostly stays near the last code."""
    if rng.random() < 0.3:
        return rng.integers(0, size, shape).astype(np.uint16)
    steps = rng.choice([-2, -1, 0, 0, 1, 3], size=shape)
    return ((np.cumsum(steps, axis=-1) + rng.integers(0, size, shape[:-1] + (1,))) % size
            ).astype(np.uint16)


REJECTED = "rejected"  # an exception: coding.decode reports any as FieldOutOfRange


def reference(monkeypatch, function, *args):
    """``function`` run on the constriction path: its result, or REJECTED."""
    with monkeypatch.context() as patch:
        patch.setattr(ctx, "compiled", None)
        return compiled(function, *args)


def compiled(function, *args):
    try:
        return function(*args)
    except Exception:  # noqa: BLE001 - constriction raises AssertionError, ValueError ...
        return REJECTED


def same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def test_the_compiled_coder_is_the_one_in_use():
    assert ctx.compiled is _ctxcoder


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_streams=st.integers(1, 2), n_codebooks=st.integers(1, 3),
       frames=st.sampled_from([1, 2, 15, 16, 17, 40, 120]),
       size=st.sampled_from([2, 3, 16, 1000, 1024, 4099]),
       n_neighbours=st.sampled_from([0, 1, 5, 32, 64]),
       style=st.sampled_from(["skewed", "flat", "near"]))
def test_same_bytes_and_tokens_as_constriction(monkeypatch, seed, n_streams, n_codebooks, frames,
                                               size, n_neighbours, style):
    rng = np.random.default_rng(seed)
    prior = some_prior(rng, size, n_codebooks, min(n_neighbours, size - 1), style)
    tokens = some_tokens(rng, (n_streams, n_codebooks, frames), size)
    data = ctx.encode(tokens, prior, size)
    assert data == reference(monkeypatch, ctx.encode, tokens, prior, size)
    assert np.array_equal(ctx.decode(data, tokens.shape, prior, size), tokens)
    # damaged: a flipped bit, words cut or added: the same verdict (tokens, None or an error)
    for _ in range(4):
        damaged = bytearray(data)
        kind = rng.integers(0, 3)
        if kind == 0 and damaged:
            damaged[rng.integers(0, len(damaged))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            del damaged[max(len(damaged) - 4 * int(rng.integers(1, 3)), 0):]
        else:
            damaged += rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        args = (bytes(damaged), tokens.shape, prior, size)
        assert same(compiled(ctx.decode, *args), reference(monkeypatch, ctx.decode, *args))


def test_the_remainder_goes_to_the_first_largest_code(monkeypatch):
    """Codes 40 and 50 were each seen twice, 47 once: after 47 (whose neighbours 44..51 hold
    50, with rank weight 0, but not 40) codes 40 and 50 tie for the largest frequency, and
    the remainder of the quantization goes to 40, the first, which is not a neighbour."""
    size = 64
    ranks = np.ones(8, np.int64)
    ranks[5] = 0  # near(): offsets 0, 1, -1, 2, -2, 3, -3, 4: code 50 is 47's rank 5
    # strength 2: the order-0 table's own remainder (to 40) does not split them (searched)
    book = CodebookPrior(strength=2, order0=table(np.ones(size, np.int64)), mix=1,
                         rank_strength=1, ranks=table(ranks), neighbours=near(size, 8))
    prior = Prior("test_24khz", bytes(32), size, (book,))
    first_block = [40, 40, 50, 50, 47, *range(10, 21)]
    tokens = np.array([[first_block + [47, 45, 45, 30]]], np.uint16)
    row = ctx._Row(book, size)
    row.update(tokens[0, 0, :16], None)
    base, extra, total = mixing = row.mixing(row.order0())
    weights = base.copy()
    weights[book.neighbours[47]] += extra
    floors = weights * row.free // total
    assert floors[40] == floors[50] == floors.max() and 40 not in book.neighbours[47]
    assert row.mixed_one(mixing, 47)[40] > floors[40]  # the reference gives it the remainder
    data = ctx.encode(tokens, prior, size)
    assert data == reference(monkeypatch, ctx.encode, tokens, prior, size)
    assert np.array_equal(ctx.decode(data, tokens.shape, prior, size), tokens)


def test_the_largest_codebooks_and_neighbour_lists(monkeypatch):
    """65,536 codes (the format's most), 64 neighbours (a prior's most)."""
    rng = np.random.default_rng(7)
    size = spec.MAX_CODEBOOK_SIZE
    prior = some_prior(rng, size, 2, spec.PRIOR_MAX_NEIGHBOURS)
    tokens = some_tokens(rng, (1, 2, 20), size)
    data = ctx.encode(tokens, prior, size)
    assert data == reference(monkeypatch, ctx.encode, tokens, prior, size)
    assert np.array_equal(ctx.decode(data, tokens.shape, prior, size), tokens)


def carried_chunks(seed: int, size: int, n_neighbours: int):
    """Four chunks coded with carried models (coder 4 after a keyframe coded with PACK):
    their data and the models after each, as (counts, rank_counts, prev, mass) per row."""
    rng = np.random.default_rng(seed)
    prior = some_prior(rng, size, 2, n_neighbours)
    carry = ctx.Carry(size, 1, 2)
    carry.end(some_tokens(rng, (1, 2, 5), size), spec.Coder.PACK, prior, keyframe=True)
    out = []
    for frames in (1, 600, 1100, 17):  # the mass passes CTX_HALVE_ABOVE: counts halve
        tokens = some_tokens(rng, (1, 2, frames), size)
        rows = carry.begin()
        data = ctx.encode(tokens, prior, size, rows)
        decoded_rows = carry.begin()
        assert np.array_equal(ctx.decode(data, tokens.shape, prior, size, decoded_rows), tokens)
        state = [(r.counts.tolist(), r.rank_counts.tolist(), r.prev, r.mass) for r in rows]
        assert state == [(r.counts.tolist(), r.rank_counts.tolist(), r.prev, r.mass)
                         for r in decoded_rows]
        carry.end(tokens, spec.Coder.CTX_CARRY, prior, keyframe=False, rows=rows)
        out.append((data, state))
    return out


@pytest.mark.parametrize("size, n_neighbours", [(4, 3), (1024, 32), (1024, 0)])
def test_carried_models_match_constriction_through_halvings(monkeypatch, size, n_neighbours):
    got = carried_chunks(3, size, n_neighbours)
    assert max(mass for _, state in got for *_, mass in state) <= spec.CTX_HALVE_ABOVE
    assert got == reference(monkeypatch, carried_chunks, 3, size, n_neighbours)


def steered(size: int, n: int, settle_with_carry: bool, seed: int = 0):
    """Tokens that drive the range coder (constriction's, replayed here with the uniform
    prior's models) into its rare state: a 64-bit interval that straddles a word boundary,
    held for three words before it settles with or without a carry. Returns the tokens and
    the (words held, carry) of every settling."""
    rng = np.random.default_rng(seed)
    row = ctx._Row(uniform_prior(size, 1).codebooks[0], size)
    lower, width, held, settled, tokens = 0, MASK64, 0, [], []
    for start in range(0, n, spec.CTX_BLOCK):
        probability = row.order0() + 1
        cum = np.concatenate([[0], np.cumsum(probability)])
        block = []
        for _ in range(min(spec.CTX_BLOCK, n - start)):
            scale = width >> spec.CTX_PRECISION
            if held and held < 3:  # the symbol whose interval holds the boundary
                x = int(np.searchsorted(cum, ((1 << 64) - lower) // scale, side="right") - 1)
            elif held:
                x = size - 1 if settle_with_carry else 0
            else:
                x = int(rng.integers(0, size))
            new_lower = (lower + scale * int(cum[x])) & MASK64
            width = scale * int(probability[x])
            if held and (new_lower + width) & MASK64 > new_lower:
                settled.append((held, new_lower < lower))
                held = 0
            lower = new_lower
            if width < 1 << 32:
                width, lower = width << 32, (lower << 32) & MASK64
                held = held + 1 if held else int((lower + width) & MASK64 <= lower)
            block.append(x)
        row.update(np.array(block), None)
        tokens += block
    return np.array(tokens, np.uint16).reshape(1, 1, -1), settled


MASK64 = (1 << 64) - 1


@pytest.mark.parametrize("size", [16, 65536])
@pytest.mark.parametrize("carry", [False, True])
def test_held_back_words_settle_as_constrictions_do(monkeypatch, size, carry):
    """Words held back across a boundary, settled with and without a carry, and sealed while
    held (some prefixes end there): the same bytes as constriction."""
    tokens, settled = steered(size, 300, carry)
    assert (3, carry) in settled
    prior = uniform_prior(size, 1)
    for end in range(1, tokens.shape[2] + 1, 5):
        part = tokens[..., :end]
        data = ctx.encode(part, prior, size)
        assert data == reference(monkeypatch, ctx.encode, part, prior, size), end
        assert np.array_equal(ctx.decode(data, part.shape, prior, size), part)


def test_no_tokens_no_words(monkeypatch):
    prior = uniform_prior(16, 1)
    assert ctx.encode(np.zeros((1, 1, 0), np.uint16), prior, 16) == b""
    for data, accepted in ((b"", True), (bytes(4), True), (bytes(8), True), (bytes(12), False)):
        # constriction reads two words before the first symbol, so takes them as used
        got = ctx.decode(data, (1, 1, 0), prior, 16)
        assert (got is not None) == accepted
        assert same(got, reference(monkeypatch, ctx.decode, data, (1, 1, 0), prior, 16))


def test_bad_arguments_are_value_errors():
    prior = uniform_prior(16, 1)
    state = ctx._compiled_state((1, 1, 4), prior, 16, None)
    with pytest.raises(ValueError, match="not a code"):
        _ctxcoder.encode(np.array([1, 2, 16, 3], np.int64), *state)
    with pytest.raises(ValueError, match="int64"):
        _ctxcoder.encode(np.array([1, 2, 3], np.int64), *state)
    with pytest.raises(ValueError, match="int64"):
        _ctxcoder.encode(np.array([1, 2, 3, 4], np.int32), *state)
    with pytest.raises(ValueError, match="whole 32-bit words"):
        _ctxcoder.decode(b"abc", np.zeros(4, np.int64), *state)
    with pytest.raises(ValueError, match="not a CTX range code"):
        _ctxcoder.decode(b"\xff" * 8, np.zeros(4, np.int64), *state)
