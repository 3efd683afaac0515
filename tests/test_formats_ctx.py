"""The CTX coder, prior files and prior training (formats layer: no model involved)."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokpack.errors import FieldOutOfRange, FormatError, PriorNotFound
from tokpack.formats import Coder, ContainerReader, Header, ctx, dumps, loads, read_tokens, spec
from tokpack.formats import prior as prior_files
from tokpack.formats.prior import CodebookPrior, Prior, table, uniform_prior
from tokpack.train import train


def walk(rng: np.random.Generator, shape, size: int) -> np.ndarray:
    """Codes that mostly stay or move to a neighbouring code (mod size)."""
    steps = rng.choice([-1, 0, 0, 1], size=shape)
    return (np.cumsum(steps, axis=-1) + rng.integers(0, size, shape[:-1] + (1,))) % size


def near(size: int, m: int) -> np.ndarray:
    """Each code's m nearest codes on the circle 0..size-1, itself first."""
    offsets = np.array([0] + [s * d for d in range(1, m) for s in (1, -1)][: m - 1])
    return (np.arange(size)[:, np.newaxis] + offsets) % size


def neighbour_prior(size: int, n_codebooks: int, m: int = 5) -> Prior:
    book = CodebookPrior(strength=16, order0=table(np.ones(size, np.int64)), mix=160,
                         rank_strength=8, ranks=table(np.arange(m, 0, -1)),
                         neighbours=near(size, m))
    return Prior("test_24khz", bytes(32), size, (book,) * n_codebooks)


def test_quantize_sums_exactly_and_keeps_proportions():
    q = ctx.quantize(np.array([1, 1, 2, 0]), 10)
    assert q.tolist() == [2, 2, 6, 0]  # floors 2, 2, 5, 0; the remainder to the largest
    rows = ctx.quantize(np.array([[3, 3], [0, 5]]), 7)
    assert rows.tolist() == [[4, 3], [0, 7]]  # a tie goes to the first


def test_constriction_uses_the_frequencies_exactly():
    """Frequency 0 means exactly one unit of 2^-24: 100 such symbols cost 2400 bits."""
    import constriction

    size = 4
    freqs = np.array([2**24 - size, 0, 0, 0], np.float64)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(np.ones(100, np.int32), constriction.stream.model.Categorical(freqs, perfect=False))
    assert encoder.num_bits() in range(2400, 2400 + 64 + 1)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), n_streams=st.integers(1, 3), n_codebooks=st.integers(1, 3),
       frames=st.sampled_from([1, 2, 15, 16, 17, 33, 100]), size=st.sampled_from([2, 16, 1000]),
       neighbours=st.booleans())
def test_round_trip(seed, n_streams, n_codebooks, frames, size, neighbours):
    rng = np.random.default_rng(seed)
    tokens = walk(rng, (n_streams, n_codebooks, frames), size).astype(np.uint16)
    prior = neighbour_prior(size, n_codebooks, min(5, size - 1)) if neighbours else uniform_prior(
        size, n_codebooks)
    data = ctx.encode(tokens, prior, size)
    assert len(data) % 4 == 0
    assert np.array_equal(ctx.decode(data, tokens.shape, prior, size), tokens)
    bits = ctx.code_lengths(tokens, prior, size).sum()
    assert bits <= len(data) * 8 <= bits + 64 + 32  # the coder adds at most a few words


def test_neighbour_model_pays_on_slowly_moving_codes():
    tokens = walk(np.random.default_rng(1), (1, 2, 750), 1024).astype(np.uint16)
    plain = len(ctx.encode(tokens, uniform_prior(1024, 2), 1024))
    with_neighbours = len(ctx.encode(tokens, neighbour_prior(1024, 2), 1024))
    assert with_neighbours < 0.5 * plain


def test_decode_rejects_extra_or_partial_words():
    tokens = walk(np.random.default_rng(2), (1, 2, 40), 16).astype(np.uint16)
    prior = uniform_prior(16, 2)
    data = ctx.encode(tokens, prior, 16)
    assert ctx.decode(data + b"\0\0", tokens.shape, prior, 16) is None
    assert ctx.decode(data + b"\xff" * 8, tokens.shape, prior, 16) is None


def test_prior_file_round_trip_and_identity(tmp_path):
    prior = neighbour_prior(64, 3)
    path = tmp_path / "p.tpp"
    prior.save(path)
    again = prior_files.load(path)
    assert again.file_bytes == prior.file_bytes and again.sha256 == prior.sha256
    assert again.codebooks[1].neighbours.tolist() == near(64, 5).tolist()
    assert uniform_prior(64, 3).sha256 == spec.UNIFORM_PRIOR_SHA256


def test_a_prior_is_named_by_its_file_not_by_a_re_encoding():
    """Another zstd level (or version) compresses the same tables to other bytes: the
    prior read from such a file is named by that file's SHA-256 (FORMAT.md)."""
    import hashlib
    import struct
    import zlib

    import zstandard

    data = neighbour_prior(64, 3).file_bytes
    head_size = prior_files._header_struct().size
    content = zstandard.ZstdDecompressor().decompress(data[head_size + 4:-4])
    body = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(content)
    head = bytearray(data[:head_size])
    struct.pack_into("<I", head, head_size - 4, len(body))  # body_size, the header's last field
    other = bytes(head) + struct.pack("<I", zlib.crc32(head)) + body + struct.pack(
        "<I", zlib.crc32(body))
    assert other != data
    again = prior_files.from_bytes(other)
    assert again.sha256 == hashlib.sha256(other).digest() != hashlib.sha256(data).digest()


def test_a_prior_header_is_read_alone_and_checked(tmp_path):
    """read_header (how a default prior is looked for) reads 88 bytes, checked as load()
    checks them: every change of a header byte, and a file cut inside it, is refused."""
    prior = neighbour_prior(8, 1, 3)
    path = tmp_path / "p.tpp"
    data = prior.file_bytes
    path.write_bytes(data[:88] + b"body not read")
    assert prior_files.read_header(path) == prior_files.PriorHeader(
        prior.model_id, prior.weights_sha256, prior.n_codebooks, prior.codebook_size)
    for offset in range(88):
        corrupted = bytearray(data[:88])
        corrupted[offset] ^= 0x41
        path.write_bytes(bytes(corrupted))
        with pytest.raises(FormatError) as caught:
            prior_files.read_header(path)
        assert caught.value.path == str(path)
    path.write_bytes(data[:87])
    with pytest.raises(FormatError, match="inside the header"):
        prior_files.read_header(path)


def test_every_byte_change_and_truncation_of_a_prior_is_a_format_error():
    data = neighbour_prior(8, 1, 3).file_bytes
    for offset in range(len(data)):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x41
        with pytest.raises(FormatError):
            prior_files.from_bytes(bytes(corrupted))
    for length in range(len(data)):
        with pytest.raises(FormatError):
            prior_files.from_bytes(data[:length])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(order0=np.full(8, 1)), "summing to 65536"),
        (dict(strength=0), "out of range"),
        (dict(mix=0), "mix 0"),
        (dict(neighbours=np.zeros((8, 3), np.int64)), "listed twice"),
        (dict(neighbours=np.full((8, 3), 9)), "below 8"),
    ],
)
def test_prior_validation(change, message):
    book = neighbour_prior(8, 1, 3).codebooks[0]
    fields = {name: getattr(book, name)
              for name in ("strength", "order0", "mix", "rank_strength", "ranks", "neighbours")}
    with pytest.raises(FieldOutOfRange, match=message):
        Prior("x", bytes(32), 8, (CodebookPrior(**{**fields, **change}),))


def header(**fields) -> Header:
    base = dict(model_id="test_24khz", weights_sha256=bytes(32), model_sample_rate=24_000,
                hop_length=320, codebook_size=64, n_codebooks=3, model_channels=1,
                source_sample_rate=24_000, source_channels=1, frames_per_chunk=50,
                source_frames=0, model_samples=0)
    return Header(**{**base, **fields})


def test_container_names_its_prior_and_needs_it_to_decode(tmp_path, monkeypatch):
    prior = neighbour_prior(64, 3)
    tokens = walk(np.random.default_rng(3), (3, 120), 64)
    data = dumps(header(), tokens, coder="ctx", prior=prior)
    assert ContainerReader(io.BytesIO(data)).header.prior_sha256 == prior.sha256
    with pytest.raises(PriorNotFound, match=prior.sha256.hex()):
        loads(data)
    assert np.array_equal(loads(data, priors=[prior]).tokens[0], tokens)
    path = tmp_path / "mine.tpp"
    prior.save(path)
    assert np.array_equal(read_tokens(io.BytesIO(data), priors=[path]), tokens)
    monkeypatch.setenv(prior_files.PATH_VARIABLE, str(tmp_path))
    chunks = list(ContainerReader(io.BytesIO(data)))
    assert {c.coder for c in chunks} == {Coder.CTX}


def test_the_generic_prior_is_built_in_and_named_by_its_codebook_size():
    """FORMAT.md "Generic priors": the digest of a text naming the codebook size (pinned:
    files name it), strength m // 8, and no file needed to decode what it coded."""
    generic = prior_files.generic_prior(64, 3)
    assert generic.sha256 == hashlib.sha256(b"tokpack generic CTX prior, 64 codes").digest()
    assert prior_files.generic_sha256(1024).hex() == (
        "1a9b175b7e803f665806e487b9db88010bbd1fd0a22a109e381d740441ae2c34")
    assert [book.strength for book in generic.codebooks] == [8] * 3
    assert prior_files.generic_prior(4, 1).codebooks[0].strength == 1
    assert prior_files.generic_prior(1024, 1).codebooks[0].strength == 128
    assert np.array_equal(generic.codebooks[0].order0, uniform_prior(64, 1).codebooks[0].order0)
    tokens = walk(np.random.default_rng(3), (3, 120), 64)
    data = dumps(header(), tokens, coder="ctx", prior=generic)
    assert ContainerReader(io.BytesIO(data)).header.prior_sha256 == generic.sha256
    assert np.array_equal(loads(data).tokens[0], tokens)  # no prior given, none on disk
    assert len(data) < len(dumps(header(), tokens, coder="ctx", prior=uniform_prior(64, 3)))
    assert prior_files.prior_label(generic.sha256.hex(), 64) == "generic"
    assert prior_files.prior_label(prior_files.generic_sha256(2048).hex(), 2048) == "generic"
    assert prior_files.prior_label("ab" * 32, 64) == "ab" * 32
    for name in ("generic", "uniform"):  # no file may claim a built-in prior's name
        claimed = dataclasses.replace(neighbour_prior(64, 1), model_id=name)
        with pytest.raises(FieldOutOfRange, match="reserved"):
            prior_files.from_bytes(claimed.file_bytes)


def test_prior_gain_estimates_what_learned_tables_save():
    """train.prior_gain: order-0 tables learned from the first half, against the generic
    prior, on the second half coded as a writer codes it; None when too short."""
    from tokpack.train import prior_gain

    rng = np.random.default_rng(5)
    skewed = (rng.zipf(1.5, (1, 2, 4000)) % 1024).astype(np.uint16)  # the same few codes
    generic = prior_files.generic_prior(1024, 2)
    gain = prior_gain(skewed, 1024, generic, frames_per_chunk=750, keyframe=6)
    assert 0.02 < gain < 0.5
    fresh = prior_gain(skewed, 1024, generic, frames_per_chunk=750, keyframe=1)
    assert fresh > gain  # chunks that start afresh lean on the prior more
    moving = np.concatenate([np.zeros((1, 2, 2000)), np.full((1, 2, 2000), 500)], axis=2)
    assert prior_gain(moving.astype(np.uint16), 1024, generic, frames_per_chunk=750) < 0.0
    assert prior_gain(skewed[:, :, :31], 1024, generic, frames_per_chunk=750) is None


def test_a_prior_that_does_not_fit_the_header_is_refused():
    small = neighbour_prior(64, 2)
    with pytest.raises(ValueError, match="needs 3"):
        dumps(header(), np.zeros((3, 5), np.int64), coder="ctx", prior=small)


def test_auto_picks_ctx_where_it_is_smallest_and_never_exceeds_pack():
    tokens = walk(np.random.default_rng(4), (3, 500), 64)
    prior = neighbour_prior(64, 3)
    data = dumps(header(), tokens, prior=prior)
    chunks = list(ContainerReader(io.BytesIO(data), priors=[prior]))
    assert {c.coder for c in chunks} == {Coder.CTX}
    assert all(c.coded_size <= (3 * c.n_frames * 6 + 7) // 8 for c in chunks)


def test_training_prefers_the_neighbour_model_on_moving_codes_and_beats_uniform():
    rng = np.random.default_rng(5)
    files = [walk(rng, (1, 2, 400), 64) for _ in range(4)]
    prior, report = train(files, codebook_size=64, model_id="test_24khz", weights_sha256=bytes(32),
                          neighbours=[near(64, 5), None], frames_per_chunk=200)
    assert report.folds == 4 and report.n_files == 4
    assert report.mix[0] > 0 and report.mix[1] == 0 and prior.codebooks[1].n_neighbours == 0
    assert report.heldout_bits[0] < 0.6 * report.uniform_bits[0]
    held_out = walk(rng, (1, 2, 400), 64).astype(np.uint16)
    assert ctx.code_lengths(held_out, prior, 64).sum() < ctx.code_lengths(
        held_out, uniform_prior(64, 2), 64).sum()


def test_salvage_reads_ctx_chunks_with_the_prior():
    from tokpack.formats.salvage import SalvageReader

    prior = neighbour_prior(64, 3)
    tokens = walk(np.random.default_rng(6), (3, 120), 64)
    data = bytearray(dumps(header(), tokens, coder="ctx", prior=prior))
    first = ContainerReader(io.BytesIO(bytes(data)), priors=[prior])
    chunks = list(first)
    data[chunks[1].offset + 20] ^= 0xFF  # the second chunk of three is lost
    with pytest.raises(PriorNotFound):
        SalvageReader(io.BytesIO(bytes(data)))
    reader = SalvageReader(io.BytesIO(bytes(data)), priors=[prior])
    kept = list(reader)
    assert [c.index for c in kept] == [0, 2]
    assert np.array_equal(kept[1].tokens[0], tokens[:, 100:])


def test_a_writer_given_a_header_that_names_a_prior_finds_it(tmp_path, monkeypatch):
    prior = neighbour_prior(64, 3)
    tokens = walk(np.random.default_rng(7), (3, 60), 64)
    named = loads(dumps(header(), tokens, coder="ctx", prior=prior), priors=[prior]).header
    with pytest.raises(PriorNotFound):
        dumps(named, tokens)
    prior.save(tmp_path / "p.tpp")
    monkeypatch.setenv(prior_files.PATH_VARIABLE, str(tmp_path))
    assert dumps(named, tokens) == dumps(header(), tokens, prior=prior)


def test_garbage_ctx_payloads_with_valid_crcs_are_format_errors():
    """A crafted chunk passes its CRC; whatever its words, reading gives a FormatError (at the
    latest the END digest) or, where they happen to decode to the same tokens, the file."""
    from tokpack.formats.chunk import frame_chunk

    rng = np.random.default_rng(8)
    data = dumps(header(), np.zeros((3, 10), np.int64), coder="ctx")
    first = ContainerReader(io.BytesIO(data)).header.header_size
    end = data[-spec.END_CHUNK_SIZE:]
    rejected = 0
    for n_words in range(0, 40, 3):
        for payload in (rng.integers(0, 256, 4 * n_words, np.uint8).tobytes(), b"\xff" * 4 * n_words):
            chunk = frame_chunk(spec.ChunkType.TOKENS, Coder.CTX, 10, payload)
            try:
                tokens = loads(data[:first] + chunk + end).tokens
            except FormatError:
                rejected += 1
            else:
                assert not tokens.any()
    assert rejected >= 20
