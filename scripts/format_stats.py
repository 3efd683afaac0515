"""Container size against plain bit packing for synthetic 10-bit token distributions.

8 codebooks x 7500 frames (100 s at 75 Hz, 6 kbps), 750 frames per chunk, default coder
(auto, with the uniform CTX prior: a 1.1 header). "coders 0-1" is what a 1.0 container would
be with PACK and PACK_ZSTD only (no byte planes, no CTX).

    python scripts/format_stats.py
"""

from __future__ import annotations

import io
import time

import numpy as np

from tokpack.formats import ContainerReader, Header, dumps, spec
from tokpack.formats.coding import packed_size

K, T, CHUNK, CODEBOOK = 8, 7500, 750, 1024


def distributions(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform; Zipf(a=1.2) over ranks, ranks mapped to codes at random per codebook; repetitive."""
    p = np.arange(1, CODEBOOK + 1, dtype=np.float64) ** -1.2
    zipf = np.stack(
        [rng.permutation(CODEBOOK)[rng.choice(CODEBOOK, T, p=p / p.sum())] for _ in range(K)]
    )
    return {
        "uniform": rng.integers(0, CODEBOOK, (K, T)),
        "zipf_1.2": zipf,
        "constant": np.full((K, T), 517),
        "period_7": np.tile(rng.integers(0, CODEBOOK, (K, 7)), (1, T // 7 + 1))[:, :T],
        "period_150": np.tile(rng.integers(0, CODEBOOK, (K, 150)), (1, T // 150)),
    }


def main() -> None:
    header = Header(
        model_id="encodec_24khz",
        weights_sha256=bytes(32),
        model_sample_rate=24_000,
        hop_length=320,
        codebook_size=CODEBOOK,
        n_codebooks=K,
        model_channels=1,
        source_sample_rate=24_000,
        source_channels=1,
        frames_per_chunk=CHUNK,
        source_frames=T * 320,
        model_samples=T * 320,
    )
    chunk_frames = [min(CHUNK, T - start) for start in range(0, T, CHUNK)]
    packed = sum(packed_size(K * n, header.bits_per_code) for n in chunk_frames)
    overhead = spec.HEADER_SIZE + len(chunk_frames) * spec.CHUNK_FRAMING_SIZE + spec.END_CHUNK_SIZE
    print(f"{K} codebooks x {T} frames of 10-bit codes, {len(chunk_frames)} chunks of {CHUNK}")
    print(f"header + framing + END = {overhead} bytes (1.0), "
          f"{overhead + spec.HEADER_SIZE_1_1 - spec.HEADER_SIZE} (1.1)")
    columns = ("packed", "container", "ratio", "coders 0-1")
    print(f"{'distribution':12} {' '.join(f'{c:>10}' for c in columns)}  chosen")
    for name, tokens in distributions(np.random.default_rng(0)).items():
        start = time.perf_counter()
        data = dumps(header, tokens)
        seconds = time.perf_counter() - start
        with ContainerReader(io.BytesIO(data)) as reader:
            chosen = sorted({chunk.coder.name for chunk in reader})
        with ContainerReader(io.BytesIO(dumps(header, tokens, coder="zstd"))) as reader:
            without_planes = overhead + sum(
                min(chunk.coded_size, packed_size(K * chunk.n_frames, header.bits_per_code))
                for chunk in reader
            )
        print(
            f"{name:12} {packed:10d} {len(data):10d} {len(data) / packed:10.3f} "
            f"{without_planes:10d}  {','.join(chosen)} ({seconds * 1000:.0f} ms to write)"
        )


if __name__ == "__main__":
    main()
