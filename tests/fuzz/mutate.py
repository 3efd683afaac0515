"""Container mutations for fuzzing the reader: random damage and field-targeted edits.

Shared by tests/fuzz/test_fuzz_reader.py (a fast seeded subset in the normal suite) and
scripts/fuzz_container.py (the long run). Every mutation is a pure function of the input
bytes and a ``random.Random``, so a failing case is reproduced from its seed.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np

from tokpack.formats import ContainerReader, Header, dumps
from tokpack.formats import spec

FIELD_VALUES = ("zero", "max", "random", "plus_one", "minus_one")


def seed_containers() -> dict[str, bytes]:
    """Small valid containers covering every layout: plain, segmented, multi-stream, coders."""
    rng = np.random.default_rng(11)

    def header(**kw) -> Header:
        base = dict(model_id="test_24khz", weights_sha256=bytes(range(32)), model_sample_rate=24_000,
                    hop_length=320, codebook_size=1024, n_codebooks=4, model_channels=1,
                    source_sample_rate=44_100, source_channels=1, resampler=1, frames_per_chunk=40)
        base.update(kw)
        n = base.pop("_frames")
        base.setdefault("model_samples", n * base["hop_length"])
        base.setdefault("source_frames", base["model_samples"] * 44_100 // base["model_sample_rate"])
        return Header(**base)

    seeds = {}
    for coder in ("pack", "zstd", "planes"):
        toks = (rng.zipf(1.4, (1, 4, 130)) % 1024).astype(np.uint16)
        seeds[f"plain_{coder}"] = dumps(header(_frames=130), toks, coder=coder)
    toks = rng.integers(0, 1000, (3, 2, 50)).astype(np.uint16)
    seeds["split3"] = dumps(header(_frames=50, n_codebooks=2, codebook_size=1000, n_streams=3, channel_mode=3,
                                   source_channels=3), toks)
    h = header(_frames=0, model_id="test_48khz", model_sample_rate=48_000, model_channels=2, source_channels=2,
               segment_length=48_000, segment_stride=47_520, frames_per_chunk=300, n_codebooks=2,
               model_samples=48_000 * 2 + 500)
    frames = [150, 150, 2]
    toks = rng.integers(0, 1024, (1, 2, sum(frames))).astype(np.uint16)
    seeds["segmented"] = dumps(h, toks, segment_frames=frames, scales=np.array([[0.5], [0.25], [0.125]], np.float32))
    seeds["empty"] = dumps(header(_frames=0), np.zeros((1, 4, 0), np.uint16))
    return seeds


def chunk_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, total size) of every chunk of a valid container, END included."""
    reader = ContainerReader(io.BytesIO(data))
    out = [(c.offset, c.size) for c in reader]
    end = out[-1][0] + out[-1][1] if out else reader.header.to_bytes().__len__()
    out.append((end, spec.END_CHUNK_SIZE))
    return out


def _value(rng: random.Random, kind: str, size: int, old: int) -> int:
    top = (1 << (8 * size)) - 1
    return {"zero": 0, "max": top, "random": rng.randint(0, top), "plus_one": min(old + 1, top),
            "minus_one": max(old - 1, 0)}[kind]


def _set_int(data: bytearray, offset: int, fmt: str, value: int) -> None:
    struct.pack_into("<" + fmt, data, offset, value)


def _fix_header_crc(data: bytearray) -> None:
    size = struct.unpack_from("<H", data, 10)[0]
    if 16 <= size <= len(data):
        _set_int(data, size - 4, "I", zlib.crc32(bytes(data[: size - 4])))


def _fix_chunk_crc(data: bytearray, offset: int) -> None:
    length = struct.unpack_from("<I", data, offset + 4)[0]
    end = offset + spec.CHUNK_HEAD_SIZE + length
    if end + 4 <= len(data):
        _set_int(data, end, "I", zlib.crc32(bytes(data[offset:end])))


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation; returns its kind and the mutated bytes."""
    out = bytearray(data)
    kind = rng.choice(("bitflip", "byte_run", "truncate", "insert", "delete", "header_field",
                       "header_field_crc_fixed", "chunk_field", "chunk_field_crc_fixed", "payload_crc_fixed",
                       "duplicate_chunk", "swap_chunks", "append"))
    n = len(out)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "byte_run":
        i = rng.randrange(n)
        fill = rng.choice((0x00, 0xFF, None))
        for j in range(i, min(n, i + rng.randint(1, 64))):
            out[j] = rng.randrange(256) if fill is None else fill
    elif kind == "truncate":
        del out[rng.randrange(n):]
    elif kind == "insert":
        i = rng.randrange(n + 1)
        out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif kind == "delete":
        i = rng.randrange(n)
        del out[i:i + rng.randint(1, 32)]
    elif kind.startswith("header_field"):
        name, offset, fmt = rng.choice(spec.HEADER_FIELDS)
        if fmt.endswith("s"):
            size = int(fmt[:-1])
            i = offset + rng.randrange(size)
            out[i] = rng.choice((0, 0xFF, rng.randrange(256)))
        else:
            size = struct.calcsize(fmt)
            old = struct.unpack_from("<" + fmt, out, offset)[0]
            _set_int(out, offset, fmt, _value(rng, rng.choice(FIELD_VALUES), size, old))
        kind = f"{kind}:{name}"
        if kind.startswith("header_field_crc_fixed"):
            _fix_header_crc(out)
    elif kind.startswith("chunk_field") or kind == "payload_crc_fixed":
        chunks = chunk_offsets(data)
        offset, size = rng.choice(chunks)
        if kind == "payload_crc_fixed":
            if size > spec.CHUNK_FRAMING_SIZE:
                out[offset + spec.CHUNK_HEAD_SIZE + rng.randrange(size - spec.CHUNK_FRAMING_SIZE)] ^= 1 << rng.randrange(8)
            _fix_chunk_crc(out, offset)
        else:
            name, at, fmt = rng.choice((("type", 0, "B"), ("param", 1, "B"), ("count", 2, "H"), ("length", 4, "I")))
            old = struct.unpack_from("<" + fmt, out, offset + at)[0]
            _set_int(out, offset + at, fmt, _value(rng, rng.choice(FIELD_VALUES), struct.calcsize(fmt), old))
            kind = f"{kind}:{name}"
            if kind.startswith("chunk_field_crc_fixed"):
                _fix_chunk_crc(out, offset)
    elif kind in ("duplicate_chunk", "swap_chunks"):
        chunks = chunk_offsets(data)
        (a, sa), (b, sb) = rng.choice(chunks), rng.choice(chunks)
        if kind == "duplicate_chunk":
            out[b:b] = data[a:a + sa]
        elif a != b:
            (a, sa), (b, sb) = sorted(((a, sa), (b, sb)))
            out[a:b + sb] = data[b:b + sb] + data[a + sa:b] + data[a:a + sa]
    else:  # append
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return kind, bytes(out)
