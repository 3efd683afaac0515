"""Coder 4, CTX_CARRY (FORMAT.md "Carried models"): CTX models carried from chunk to chunk
between keyframes, through writer, reader and salvage."""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pytest

from tokpack.formats import ContainerReader, ContainerWriter, Header, ctx, dumps, loads, spec
from tokpack.formats.prior import load as load_prior
from tokpack.formats.prior import uniform_prior
from tokpack.formats.salvage import salvage
from tokpack.formats.writer import keyframe_chunks

DATA = pathlib.Path(__file__).resolve().parent / "data"
GOLDEN_PRIOR = load_prior(DATA / "golden.tpp")  # 2 codebooks of 16; codebook 0 has neighbours


def header(n_frames: int, *, codebook_size: int = 16, n_codebooks: int = 2, per_chunk: int = 32,
           **fields) -> Header:
    return Header(model_id="test_24khz", weights_sha256=bytes(32), model_sample_rate=24_000,
                  hop_length=320, codebook_size=codebook_size, n_codebooks=n_codebooks,
                  model_channels=1, source_sample_rate=24_000, source_channels=1,
                  frames_per_chunk=per_chunk, source_frames=n_frames * 320,
                  model_samples=n_frames * 320, **fields)


def walk(n_frames: int, seed: int = 0, n_codebooks: int = 2, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.integers(-1, 2, (n_codebooks, n_frames)), axis=1) % size).astype(np.uint16)


def coders(data: bytes, priors=()) -> list[int]:
    with ContainerReader(io.BytesIO(data), priors=priors) as reader:
        return [int(chunk.coder) for chunk in reader]


def test_the_state_after_a_chunk_is_what_coding_it_leaves():
    """Carry counts a coder-3 chunk at once and replays a packed chunk's updates; coding
    block by block must leave the same counts, rank counts, last code and mass."""
    tokens = walk(75, seed=3)[np.newaxis]
    rows = [ctx._Row(book, 16) for book in GOLDEN_PRIOR.codebooks[:2]]
    ctx.encode(tokens, GOLDEN_PRIOR, 16, rows)
    for coder in (spec.Coder.CTX, spec.Coder.PACK):
        carry = ctx.Carry(16, 1, 2)
        carry.end(tokens, coder, GOLDEN_PRIOR, keyframe=True)
        for coded, carried in zip(rows, carry.begin(), strict=True):
            assert np.array_equal(coded.counts, carried.counts)
            assert np.array_equal(coded.rank_counts, carried.rank_counts)
            assert (coded.prev, coded.mass, carried.halve) == (carried.prev, carried.mass, True)
    assert rows[0].rank_counts.sum() > 0  # codebook 0's neighbour model was exercised


def test_what_is_not_known_stays_unknown():
    carry = ctx.Carry(16, 1, 2)
    assert carry.begin() is None  # no chunk yet
    tokens = walk(20)[np.newaxis]
    carry.end(tokens, spec.Coder.PACK, None, keyframe=True)  # the prior is not here
    assert carry.begin() is None
    carry.end(tokens, spec.Coder.PACK, GOLDEN_PRIOR, keyframe=False)  # continues the unknown
    assert carry.begin() is None
    carry.end(tokens, spec.Coder.PACK, GOLDEN_PRIOR, keyframe=None)  # keyframe or not?
    assert carry.begin() is None
    carry.end(tokens, spec.Coder.CTX, GOLDEN_PRIOR, keyframe=None)  # coder 3: a keyframe
    assert carry.begin()[0].mass == 20
    carry.end(tokens, spec.Coder.PACK_ZSTD, GOLDEN_PRIOR, keyframe=False)
    assert carry.begin()[0].mass == 40  # carried on through a zstd chunk
    carry.lose()
    assert carry.begin() is None


@pytest.mark.parametrize("prior", [None, GOLDEN_PRIOR], ids=["uniform", "neighbours"])
def test_carried_models_round_trip_and_save_bytes(prior):
    tokens = walk(32 * 20, seed=1, size=5)  # 5 of the 16 codes: what carrying learns
    alone = dumps(header(tokens.shape[1]), tokens, coder="ctx", prior=prior)
    carried = dumps(header(tokens.shape[1]), tokens, coder="ctx", prior=prior, keyframe=4)
    priors = [] if prior is None else [prior]
    assert np.array_equal(loads(carried, priors=priors).tokens[0], tokens)
    used = coders(carried, priors)
    assert all(c != spec.Coder.CTX_CARRY for c in used[::4])  # keyframes start afresh
    assert used.count(spec.Coder.CTX_CARRY) == 15  # every other chunk carries on
    assert set(coders(alone, priors)) <= {0, 1, 2, 3}
    assert len(carried) < 0.95 * len(alone)
    assert loads(carried, priors=priors).header.version_minor == 4
    assert loads(alone, priors=priors).header.version_minor == 1


def test_a_chunk_of_another_coder_passes_its_codes_on():
    """A constant chunk goes out as zstd planes; the coder-4 chunk after it starts from
    what CTX would have left after it (coders 0-2 start afresh too)."""
    tokens = walk(32 * 6, seed=2)
    tokens[:, 64:96] = 5
    data = dumps(header(tokens.shape[1]), tokens, prior=GOLDEN_PRIOR, keyframe=6)
    used = coders(data, [GOLDEN_PRIOR])
    assert used[2] in (spec.Coder.PACK_ZSTD, spec.Coder.PLANES_ZSTD)
    assert used[3] == spec.Coder.CTX_CARRY
    assert np.array_equal(loads(data, priors=[GOLDEN_PRIOR]).tokens[0], tokens)
    carry = ctx.Carry(16, 1, 2)  # what the models carried into chunk 3 had counted
    for i, coder in enumerate(used[:3]):
        chunk = tokens[np.newaxis, :, 32 * i : 32 * (i + 1)]
        rows = None if i == 0 else carry.begin()
        if coder == spec.Coder.CTX_CARRY:
            ctx.encode(chunk, GOLDEN_PRIOR, 16, rows)
        carry.end(chunk, coder, GOLDEN_PRIOR, keyframe=i == 0, rows=rows)
    assert carry.begin()[1].mass == 96 and carry.begin()[1].counts[5] >= 32


def test_halving_keeps_the_counts_bounded():
    """Without halving a long run of coder-4 chunks would grow the counts without end."""
    rng = np.random.default_rng(4)
    tokens = rng.choice(16, (2, 16 * 400), p=np.r_[[0.5], np.full(15, 0.5 / 15)]).astype(np.uint16)
    h = header(tokens.shape[1], per_chunk=16)
    data = dumps(h, tokens, coder="ctx", prior=GOLDEN_PRIOR, keyframe=spec.MAX_CTX_KEYFRAME)
    assert coders(data, [GOLDEN_PRIOR]).count(spec.Coder.CTX_CARRY) == 399
    carry = ctx.Carry(16, 1, 2)
    with ContainerReader(io.BytesIO(data), priors=[GOLDEN_PRIOR]) as reader:
        for chunk in reader:
            rows = carry.begin() if chunk.coder == spec.Coder.CTX_CARRY else None
            if rows is not None:  # the reader's models, replayed: the same tokens come out
                again = ctx.decode(ctx.encode(chunk.tokens, GOLDEN_PRIOR, 16, rows), chunk.tokens.shape,
                                   GOLDEN_PRIOR, 16, carry.begin())
                assert np.array_equal(again, chunk.tokens)
            carry.end(chunk.tokens, chunk.coder, GOLDEN_PRIOR, keyframe=chunk.index == 0, rows=rows)
    for row in carry.begin():
        assert row.mass <= spec.CTX_HALVE_ABOVE
        assert row.counts.sum() <= spec.CTX_HALVE_ABOVE + 16
        assert row.rank_counts.sum() <= spec.CTX_HALVE_ABOVE


def test_other_coders_ignore_the_keyframe():
    tokens = walk(100)
    for coder in ("zstd", "planes", "pack"):
        data = dumps(header(100), tokens, coder=coder, keyframe=5)
        assert loads(data).header.version_minor == 0 and loads(data).header.ctx_keyframe == 1


def test_salvage_loses_the_carried_chunks_after_a_lost_one():
    tokens = walk(32 * 9, seed=5)
    data = bytearray(dumps(header(tokens.shape[1]), tokens, prior=GOLDEN_PRIOR, keyframe=3))
    with ContainerReader(io.BytesIO(bytes(data)), priors=[GOLDEN_PRIOR]) as reader:
        chunks = list(reader)
    assert [int(c.coder) for c in chunks] == [3, 4, 4] * 3
    data[chunks[4].offset + 20] ^= 0x40  # chunk 4 (coder 4) damaged: chunk 5 carries on from it
    result = salvage(io.BytesIO(bytes(data)), priors=[GOLDEN_PRIOR])
    assert [c.index for c in result.chunks] == [0, 1, 2, 3, 6, 7, 8]
    assert [(d.first_chunk, d.n_chunks) for d in result.damage] == [(4, 1), (5, 1)]
    assert "continue from a lost chunk" in result.damage[1].reason
    for chunk in result.chunks:
        want = tokens[:, chunk.first_frame : chunk.first_frame + chunk.n_frames]
        assert np.array_equal(chunk.tokens[0], want)


def test_salvage_resynchronises_without_decoding_a_carried_chunk_from_the_wrong_models():
    """After framing damage the scan looks for the next valid chunk: a coder-4 chunk there
    cannot be decoded (its predecessor is unknown) and must not be, from older models."""
    tokens = walk(32 * 6, seed=6)
    data = bytearray(dumps(header(tokens.shape[1]), tokens, prior=GOLDEN_PRIOR, keyframe=3))
    with ContainerReader(io.BytesIO(bytes(data)), priors=[GOLDEN_PRIOR]) as reader:
        chunks = list(reader)
    data[chunks[1].offset : chunks[1].offset + 8] = bytes(8)  # chunk 1's framing wiped
    result = salvage(io.BytesIO(bytes(data)), priors=[GOLDEN_PRIOR])
    kept = {c.index for c in result.chunks}
    assert 0 in kept and 3 in kept and not kept & {1, 2}
    for chunk in result.chunks:
        want = tokens[:, chunk.first_frame : chunk.first_frame + chunk.n_frames]
        assert np.array_equal(chunk.tokens[0], want)


def test_keyframe_chunks_is_about_the_seconds_asked():
    h = header(750, per_chunk=750)  # 10 s chunks at 75 frames/s
    assert keyframe_chunks(h) == 6 and keyframe_chunks(h, 60) == 6 and keyframe_chunks(h, 0) == 1
    assert keyframe_chunks(h, 1) == 1 and keyframe_chunks(h, 10**9) == spec.MAX_CTX_KEYFRAME
    assert keyframe_chunks(header(3, per_chunk=3)) == 1500  # live packets of 40 ms
    with pytest.raises(ValueError, match=">= 0"):
        keyframe_chunks(h, -1)
    with pytest.raises(ValueError, match=">= 0"):
        keyframe_chunks(h, float("nan"))


def test_a_live_writer_carries_its_small_chunks():
    tokens = walk(3 * 200, seed=7)
    h = header(tokens.shape[1], per_chunk=3)
    out = io.BytesIO()
    writer = ContainerWriter(out, h.__class__(**{**h.__dict__, "source_frames": None,
                                                 "model_samples": None}),
                             prior=uniform_prior(16, 2), live=True, keyframe=keyframe_chunks(h))
    writer.write(tokens[:, :-3])
    writer.close(source_frames=h.source_frames, model_samples=h.model_samples, last=tokens[:, -3:])
    read = loads(out.getvalue())
    assert read.header.ctx_keyframe == 1500 and np.array_equal(read.tokens[0], tokens)


def test_without_the_prior_only_the_ctx_chunks_fail():
    """The models of a packed chunk need the prior to carry on, but the chunk itself does not."""
    from tokpack.errors import PriorNotFound

    chunks = []
    with ContainerReader(DATA / "ctx_carry_auto.tpk") as reader:  # coders 0, 4, 0, ...
        with pytest.raises(PriorNotFound):
            for chunk in reader:
                chunks.append(chunk)
    assert [int(c.coder) for c in chunks] == [spec.Coder.PACK]


@pytest.mark.parametrize("mass", [0, 1990, 2040, 5000])
def test_advancing_at_once_is_advancing_block_by_block(mass):
    """Carry counts a packed chunk's tokens between halvings at once; the coder updates
    after every block: the same models, halvings included (a mass near 2048 halves inside
    the chunk, one far above it halves after every block)."""
    rng = np.random.default_rng(mass)
    tokens = rng.integers(0, 16, (3, 2, 150)).astype(np.uint16)  # 3 streams x 2 codebooks
    start = []
    for i in range(6):
        row = ctx._Row(GOLDEN_PRIOR.codebooks[i % 2], 16, halve=True)
        row.counts += rng.integers(0, 40, 16)
        row.rank_counts += rng.integers(0, 40, row.book.n_neighbours)
        row.prev, row.mass = int(rng.integers(0, 16)), mass
        start.append(row)
    at_once = ctx._advance([row.carried() for row in start], tokens)
    for model, row, ref in zip(at_once, tokens.reshape(6, -1).astype(np.int64), start, strict=True):
        ranks = ctx._ranks(row, ref.predecessors(row), ref.neighbours) if ref.book.mix else None
        for b in range(0, 150, spec.CTX_BLOCK):
            ref.update(row[b : b + spec.CTX_BLOCK], None if ranks is None else ranks[b : b + spec.CTX_BLOCK])
        assert np.array_equal(model.counts, ref.counts) and np.array_equal(model.rank_counts, ref.rank_counts)
        assert (model.prev, model.mass) == (ref.prev, ref.mass)
