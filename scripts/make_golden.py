"""Write the golden vectors listed in docs/FORMAT.md into tests/data/.

The bytes are deterministic (seeded numpy, fixed coders); tests/test_formats_golden.py
rebuilds them in memory with golden_vectors() and compares byte for byte.

    python scripts/make_golden.py
"""

from __future__ import annotations

import hashlib
import io
import pathlib

import numpy as np

from tokpack.formats import ChannelMode, ContainerWriter, Header, Resampler, dumps
from tokpack.formats.prior import CodebookPrior, Prior, generic_prior, table
from tokpack.formats.tokens import pack as pack_tokens

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
SEED = 20261122
WEIGHTS = hashlib.sha256(b"tokpack golden vector weights").digest()


def _header(**fields) -> Header:
    base = dict(
        model_id="test_24khz",
        weights_sha256=WEIGHTS,
        model_sample_rate=24_000,
        hop_length=320,
        codebook_size=1024,
        n_codebooks=2,
        model_channels=1,
        source_sample_rate=24_000,
        source_channels=1,
    )
    return Header(**{**base, **fields})


def _zipf(rng: np.random.Generator, shape: tuple[int, ...], size: int, a: float) -> np.ndarray:
    """Zipf(a) over ranks, ranks mapped to codes by a random permutation."""
    p = np.arange(1, size + 1, dtype=np.float64) ** -a
    return rng.permutation(size)[rng.choice(size, size=shape, p=p / p.sum())]


def golden_vectors() -> dict[str, bytes]:
    rng = np.random.default_rng(SEED)
    vectors = {}

    # 1600 samples at 24 kHz -> 5 frames of 2 codebooks; 4 frames per chunk -> chunks of 4 and 1.
    tiny = _header(frames_per_chunk=4, source_frames=1600, model_samples=1600)
    vectors["tiny_24khz.tpk"] = dumps(tiny, rng.integers(0, 1024, (2, 5)), coder="pack")

    vectors["empty.tpk"] = dumps(
        _header(source_frames=0, model_samples=0), np.zeros((2, 0), np.int64), coder="pack"
    )

    # 48 kHz-like stereo model, scaled down: segments of 1600 samples (5 frames) every 1200.
    # 2251 frames at 44.1 kHz -> 2451 model samples -> segments at 0, 1200, 2400 of
    # 1600, 1251, 51 samples -> 5, 4, 1 frames; 2 segments per chunk.
    segmented = _header(
        model_id="test_48khz",
        model_sample_rate=48_000,
        n_codebooks=4,
        model_channels=2,
        source_sample_rate=44_100,
        source_channels=2,
        resampler=Resampler.SINC_HANN,
        segment_length=1600,
        segment_stride=1200,
        frames_per_chunk=10,
        source_frames=2251,
        model_samples=2451,
    )
    vectors["segmented_48khz.tpk"] = dumps(
        segmented,
        rng.integers(0, 1024, (4, 10)),
        segment_frames=[5, 4, 1],
        scales=rng.lognormal(-2.0, 0.5, 3).astype(np.float32),
        coder="pack",
    )

    # 3 source channels, each its own stream through a mono model, written as if to a pipe:
    # the header does not know the lengths, END does. Periodic tokens: zstd wins.
    split = _header(
        n_codebooks=4,
        source_sample_rate=48_000,
        source_channels=3,
        n_streams=3,
        channel_mode=ChannelMode.SPLIT,
        resampler=Resampler.SINC_HANN,
    )
    period = rng.integers(0, 1024, (3, 4, 6))
    buffer = io.BytesIO()
    with ContainerWriter(buffer, split, coder="zstd") as writer:
        writer.write(np.tile(period, (1, 1, 7))[:, :, :40])
        writer.close(source_frames=25_600, model_samples=12_800)
    vectors["split_3ch_zstd.tpk"] = buffer.getvalue()

    # Stereo 44.1 kHz downmixed for a mono model; non-power-of-two codebook, skewed codes.
    planes = _header(
        codebook_size=1000,
        n_codebooks=8,
        source_sample_rate=44_100,
        source_channels=2,
        channel_mode=ChannelMode.DOWNMIX,
        resampler=Resampler.SINC_HANN,
        source_frames=11_025,
        model_samples=6000,
    )
    vectors["planes_cb1000.tpk"] = dumps(planes, _zipf(rng, (8, 19), 1000, 1.2), coder="planes")

    # CTX: 16-code codebooks whose codes wander to nearby codes (a random walk), 40 frames
    # in chunks of 32 + 8 (blocks of 16, 16 and 8). First with the built-in uniform prior,
    # then with golden.tpp, whose codebook 0 lists each code's 3 nearest codes.
    walk = np.cumsum(rng.integers(-1, 2, (2, 40)), axis=1) % 16
    small = _header(codebook_size=16, frames_per_chunk=32, source_frames=12_800,
                    model_samples=12_800)
    vectors["ctx_uniform.tpk"] = dumps(small, walk, coder="ctx")
    vectors["ctx_prior.tpk"] = dumps(small, walk, coder="ctx", prior=golden_prior())

    # Version 1.2, tokens only (tokpack pack): another codec's [streams, codebooks, frames]
    # array of 12-bit codes at 21.5 frames/s, without a model.
    buffer = io.BytesIO()
    pack_tokens(rng.integers(0, 4096, (2, 3, 20)), buffer, codebook_size=4096, frame_rate=21.5,
                codec="snac", coder="zstd")
    vectors["tokens_only.tpk"] = buffer.getvalue()

    # Version 1.4, carried models: a longer walk in chunks of 16 frames with golden.tpp, a
    # keyframe every 3 chunks (coders 3, 4, 4, 3, 4, 4, 3): each coder-4 chunk starts from
    # the counts, rank counts and last code the chunk before it left.
    long_walk = np.cumsum(rng.integers(-1, 2, (2, 100)), axis=1) % 16
    carried = _header(codebook_size=16, frames_per_chunk=16, source_frames=32_000,
                      model_samples=32_000)
    vectors["ctx_carry.tpk"] = dumps(carried, long_walk, coder="ctx", prior=golden_prior(),
                                     keyframe=3)
    # The same with coder auto: packing wins the small chunks, and their codes carry on
    # (through a keyframe coded with PACK) to the coder-4 chunks after them.
    vectors["ctx_carry_auto.tpk"] = dumps(carried, long_walk, prior=golden_prior(), keyframe=3)
    # ... and halving: one codebook of 4 codes, 3040 frames in chunks of 600, a keyframe
    # every 4 chunks (coders 3, 4, 4, 4, 3, 4): the mass passes 2048 in chunk 3, whose
    # counts are halved there; the codes' frequencies change halfway.
    skew = np.concatenate([rng.choice(4, 1520, p=[0.7, 0.2, 0.08, 0.02]),
                           rng.choice(4, 1520, p=[0.05, 0.15, 0.2, 0.6])])[np.newaxis]
    halving = _header(codebook_size=4, n_codebooks=1, frames_per_chunk=600,
                      source_frames=3040 * 320, model_samples=3040 * 320)
    vectors["ctx_halving.tpk"] = dumps(halving, skew, coder="ctx", keyframe=4)
    # The built-in generic prior (strength 64 // 8 = 8 for 64 codes), named by the digest of
    # "tokpack generic CTX prior, 64 codes": 2 codebooks of Zipf codes, 60 frames, one chunk.
    generic = _header(codebook_size=64, frames_per_chunk=60, source_frames=60 * 320,
                      model_samples=60 * 320)
    vectors["ctx_generic.tpk"] = dumps(generic, _zipf(rng, (2, 60), 64, 1.3), coder="ctx",
                                       prior=generic_prior(64, 2))
    return vectors


def golden_prior() -> Prior:
    """tests/data/golden.tpp: 2 codebooks of 16 codes; codebook 0 with a neighbour model."""
    codes = np.arange(16)
    nearest = (codes[:, np.newaxis] + np.array([0, 1, -1])) % 16
    first = CodebookPrior(strength=8, order0=table(codes + 1), mix=128, rank_strength=4,
                          ranks=table(np.array([5, 3, 2])), neighbours=nearest)
    second = CodebookPrior(strength=64, order0=table(np.ones(16, np.int64)))
    return Prior(model_id="test_24khz", weights_sha256=WEIGHTS, codebook_size=16,
                 codebooks=(first, second))


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name, data in golden_vectors().items():
        (DATA / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    prior = golden_prior().file_bytes
    (DATA / "golden.tpp").write_bytes(prior)
    print(f"golden.tpp: {len(prior)} bytes")


if __name__ == "__main__":
    main()
