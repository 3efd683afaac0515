"""Token coders: bit layout, round trips, and container size against plain packing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tokpack.errors import FieldOutOfRange
from tokpack.formats import Coder, ContainerReader, Header, ctx, dumps, spec
from tokpack.formats.coding import decode, encode, pack, packed_size, planes, planes_size, unpack
from tokpack.formats.prior import uniform_prior

COMPRESSOR = zstandard.ZstdCompressor(level=spec.ZSTD_LEVEL, write_content_size=True)


def header_10bit(n_codebooks: int, frames_per_chunk: int) -> Header:
    return Header(
        model_id="encodec_24khz",
        weights_sha256=bytes(32),
        model_sample_rate=24_000,
        hop_length=320,
        codebook_size=1024,
        n_codebooks=n_codebooks,
        model_channels=1,
        source_sample_rate=24_000,
        source_channels=1,
        frames_per_chunk=frames_per_chunk,
        source_frames=0,
        model_samples=0,
    )


def test_pack_bit_order_is_lsb_first():
    assert pack(np.array([1], np.uint16), 10) == b"\x01\x00"
    assert pack(np.array([1, 2], np.uint16), 10) == b"\x01\x08\x00"
    assert pack(np.array([0x3FF, 0, 0x3FF], np.uint16), 10) == bytes([0xFF, 0x03, 0xF0, 0x3F])
    assert pack(np.array([1, 0, 1], np.uint16), 1) == b"\x05"
    assert pack(np.array([0xABCD], np.uint16), 16) == b"\xcd\xab"


@given(bits=st.integers(1, 16), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_pack_round_trip(bits, seed, n):
    values = np.random.default_rng(seed).integers(0, 2**bits, n).astype(np.uint16)
    data = pack(values, bits)
    assert len(data) == packed_size(n, bits)
    assert np.array_equal(unpack(data, n, bits), values)
    assert len(planes(values, bits)) == planes_size(n, bits)


@settings(deadline=None)
@given(
    bits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    coder=st.sampled_from(list(Coder)),
)
def test_coder_round_trip(bits, seed, n, coder):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**bits, (1, 1, n)).astype(np.uint16)
    name = {Coder.PACK: "pack", Coder.PACK_ZSTD: "zstd", Coder.PLANES_ZSTD: "planes",
            Coder.CTX: "ctx", Coder.CTX_CARRY: "ctx"}[coder]
    ctx_coder = coder in (Coder.CTX, Coder.CTX_CARRY)
    prior = uniform_prior(2**bits, 1) if ctx_coder else None
    carry = None
    if coder == Coder.CTX_CARRY:  # carried on from a chunk before
        carry = ctx.Carry(2**bits, 1, 1)
        carry.end(rng.integers(0, 2**bits, (1, 1, 20)).astype(np.uint16), Coder.PACK, prior,
                  keyframe=True)
    rows = None if carry is None else carry.begin()
    used, data = encode(values, bits, name, COMPRESSOR, prior=prior, codebook_size=2**bits,
                        rows=rows)
    alone = ctx_coder and ctx.encode(values, prior, 2**bits,
                                     None if carry is None else carry.begin())
    if ctx_coder and len(alone) < ctx.min_bytes(values.shape, 2**bits):
        assert used not in (Coder.CTX, Coder.CTX_CARRY)  # under the floor: auto among 0-2
        assert (used, data) == encode(values, bits, "auto", COMPRESSOR)
    else:
        assert used == coder
        assert not ctx_coder or data == alone
    decoded = decode(used, data, values.shape, bits, offset=0, context="test", prior=prior,
                     codebook_size=2**bits,
                     rows=carry.begin() if used == Coder.CTX_CARRY else None)
    assert np.array_equal(decoded, values.ravel())


@settings(deadline=None)
@given(
    bits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    spread=st.integers(0, 16),
)
def test_auto_is_never_larger_than_pack(bits, seed, n, spread):
    values = np.random.default_rng(seed).integers(0, 2 ** min(bits, spread), n).astype(np.uint16)
    values = values[np.newaxis, np.newaxis]
    coder, data = encode(values, bits, "auto", COMPRESSOR)
    assert len(data) <= packed_size(n, bits)
    candidates = [
        len(encode(values, bits, name, COMPRESSOR)[1]) for name in ("pack", "zstd", "planes")
    ]
    assert len(data) == min(candidates) and coder == candidates.index(min(candidates))


def _invalid(coder, data, n=3, bits=10):
    with pytest.raises(FieldOutOfRange) as info:
        decode(coder, data, (1, 1, n), bits, offset=500, context="TOKENS chunk 0")
    assert (info.value.offset, info.value.field) == (500, "tokens")
    return str(info.value)


def test_decode_rejects_bad_pack_data():
    good = pack(np.array([1, 2, 3], np.uint16), 10)
    assert "exactly 4" in _invalid(Coder.PACK, good + b"\0")
    assert "exactly 4" in _invalid(Coder.PACK, good[:3])
    assert "padding bits" in _invalid(Coder.PACK, good[:3] + bytes([good[3] | 0x40]))


def test_decode_rejects_bad_zstd_frames():
    content = pack(np.array([1, 2, 3], np.uint16), 10)
    assert "not a zstd frame" in _invalid(Coder.PACK_ZSTD, content)
    assert "not a zstd frame" in _invalid(Coder.PACK_ZSTD, b"\x50\x2a\x4d\x18\x04\0\0\0" + content)
    assert "declares 5 bytes" in _invalid(Coder.PACK_ZSTD, COMPRESSOR.compress(content + b"\0"))
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(content)
    assert "no content size" in _invalid(Coder.PACK_ZSTD, no_size)
    assert "does not decode" in _invalid(Coder.PACK_ZSTD, COMPRESSOR.compress(content) + b"\0")
    assert "bad zstd frame header" in _invalid(Coder.PACK_ZSTD, spec.ZSTD_FRAME_MAGIC)
    padded = content[:3] + bytes([content[3] | 0x80])
    assert "padding bits" in _invalid(Coder.PACK_ZSTD, COMPRESSOR.compress(padded))
    planes_padding = b"\1\2\3" + b"\x40"  # 3 high-bit pairs use 6 bits of the last byte
    assert "padding bits" in _invalid(Coder.PLANES_ZSTD, COMPRESSOR.compress(planes_padding))


def test_zstd_bomb_is_not_inflated():
    """A frame claiming a huge content size is refused from its header alone."""
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(50_000_000))
    assert "declares 50000000 bytes" in _invalid(Coder.PACK_ZSTD, bomb)


def distributions(rng, n_codebooks, frames):
    p = np.arange(1, 1025, dtype=np.float64) ** -1.2
    zipf = np.stack(
        [rng.permutation(1024)[rng.choice(1024, frames, p=p / p.sum())] for _ in range(n_codebooks)]
    )
    return {
        "uniform": rng.integers(0, 1024, (n_codebooks, frames)),
        "zipf": zipf,
        "constant": np.full((n_codebooks, frames), 1000),
        "period_5": np.tile(rng.integers(0, 1024, (n_codebooks, 5)), frames // 5),
        "alternating": np.tile(np.array([[3, 1021]]), (n_codebooks, frames // 2)),
    }


@pytest.mark.parametrize("name", ["uniform", "zipf", "constant", "period_5", "alternating"])
def test_container_is_never_larger_than_packing(name):
    """bytes <= packed + header (1.1: 168 B) + 16 B per chunk (END counted as one), 10-bit codes."""
    n_codebooks, frames, per_chunk = 8, 7500, 750
    tokens = distributions(np.random.default_rng(7), n_codebooks, frames)[name]
    data = dumps(header_10bit(n_codebooks, per_chunk), tokens)
    n_chunks = frames // per_chunk
    packed = n_chunks * packed_size(n_codebooks * per_chunk, 10)
    assert len(data) <= packed + spec.HEADER_SIZE_1_1 + 16 * (n_chunks + 1)
    with ContainerReader(io.BytesIO(data)) as reader:
        assert all(
            chunk.coded_size <= packed_size(n_codebooks * chunk.n_frames, 10) for chunk in reader
        )
    if name in ("constant", "period_5", "alternating"):
        assert len(data) < packed / 20
    if name == "zipf":
        assert len(data) < 0.95 * packed


@pytest.mark.parametrize("frames", [1, 3, 749, 751])
def test_odd_chunks_stay_within_framing_overhead(frames):
    tokens = np.random.default_rng(frames).integers(0, 1024, (8, frames))
    data = dumps(header_10bit(8, 750), tokens)
    chunk_frames = [750] * (frames // 750) + [frames % 750]
    packed = sum(packed_size(8 * n, 10) for n in chunk_frames)
    fixed = spec.HEADER_SIZE_1_1 + spec.END_CHUNK_SIZE
    assert len(data) <= packed + fixed + spec.CHUNK_FRAMING_SIZE * len(chunk_frames)
