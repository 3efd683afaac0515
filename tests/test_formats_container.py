"""Writer and reader: bit-exact round trips of every shape, through paths, BytesIO and pipes."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokpack.errors import Truncated
from tokpack.formats import (
    UNKNOWN,
    ChannelMode,
    Coder,
    ContainerReader,
    ContainerWriter,
    Header,
    dumps,
    loads,
    read_container,
    read_header,
    read_tokens,
)
from tokpack.errors import PriorNotFound
from tokpack.formats.prior import uniform_prior
from tokpack.formats.spec import CHUNK_FRAMING_SIZE, END_CHUNK_SIZE

CODERS = ["auto", "pack", "zstd", "planes", "ctx"]
FORCED = {"pack": Coder.PACK, "zstd": Coder.PACK_ZSTD, "planes": Coder.PLANES_ZSTD,
          "ctx": Coder.CTX}


def make_header(n_streams: int = 1, **fields) -> Header:
    base = dict(
        model_id="test_24khz",
        weights_sha256=bytes(32),
        model_sample_rate=24_000,
        hop_length=320,
        codebook_size=1024,
        n_codebooks=2,
        model_channels=1,
        source_sample_rate=24_000,
        source_channels=n_streams,
        n_streams=n_streams,
        channel_mode=ChannelMode.SPLIT if n_streams > 1 else ChannelMode.AS_IS,
        source_frames=0,
        model_samples=0,
    )
    return Header(**{**base, **fields})


def segmented_header(hop: int, length: int, stride: int, per_chunk: int, **fields) -> Header:
    """A tiny segmented model at 4 samples per frame, like the 48 kHz model scaled down."""
    segment_frames = math.ceil(length / hop)
    return make_header(
        model_sample_rate=300,
        source_sample_rate=300,
        hop_length=hop,
        segment_length=length,
        segment_stride=stride,
        frames_per_chunk=segment_frames * per_chunk,
        **fields,
    )


def encodec_segments(header: Header, model_samples: int) -> list[int]:
    """Frames per segment the way EnCodec cuts a signal: a segment every stride samples."""
    return [
        math.ceil(min(header.segment_length, model_samples - offset) / header.hop_length)
        for offset in range(0, model_samples, header.segment_stride)
    ]


def random_tokens(rng: np.random.Generator, shape, codebook_size: int, kind: str) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(0, codebook_size, shape)
    if kind == "top":
        return np.full(shape, codebook_size - 1)
    return rng.integers(0, min(4, codebook_size), shape)  # few distinct values: zstd wins


def written(header: Header, coder: str = "auto") -> Header:
    """The header a writer writes: coders that may use CTX make it 1.1, naming the prior."""
    if coder not in ("auto", "ctx"):
        return header
    return dataclasses.replace(header, version_minor=1, prior_sha256=bytes(32))


def check_round_trip(header: Header, tokens: np.ndarray, coder: str, **segments) -> None:
    data = dumps(header, tokens, coder=coder, **segments)
    container = loads(data)
    assert container.header == written(header, coder)
    header_size = written(header, coder).header_size
    assert container.tokens.dtype == np.uint16
    assert np.array_equal(container.tokens, tokens.reshape(container.tokens.shape))
    total = container.tokens.shape[2]
    assert container.trailer.total_frames == total
    with ContainerReader(io.BytesIO(data)) as reader:
        chunks = list(reader)
    assert reader.trailer == container.trailer
    assert len(chunks) == container.trailer.n_chunks
    assert [c.first_frame for c in chunks] == list(
        np.cumsum([0] + [c.n_frames for c in chunks])[:-1]
    )
    assert sum(c.size for c in chunks) + header_size + END_CHUNK_SIZE == len(data)
    assert [c.offset for c in chunks] == list(
        header_size + np.cumsum([0] + [c.size for c in chunks])[:-1]
    )
    if coder != "auto":
        # a forced CTX chunk that would pass zstd's bound is packed instead, and one under
        # CTX's floor (too compressible) takes what auto picks among coders 0-2
        fallback = {Coder.PACK, Coder.PACK_ZSTD, Coder.PLANES_ZSTD} if coder == "ctx" else set()
        assert {c.coder for c in chunks} <= {FORCED[coder]} | fallback
    if not header.segmented:
        assert all(c.n_frames == header.frames_per_chunk for c in chunks[:-1])
        assert len(chunks) == math.ceil(total / header.frames_per_chunk)
    for chunk in chunks:
        table = (
            2 + len(chunk.segment_frames) * (2 + 4 * header.n_streams) if header.segmented else 0
        )
        assert chunk.size == CHUNK_FRAMING_SIZE + table + chunk.coded_size


@settings(max_examples=60, deadline=None)
@given(
    n_streams=st.integers(1, 3),
    n_codebooks=st.integers(1, 32),
    codebook_size=st.sampled_from([2, 1000, 1024, 2048, 65_536]),
    per_chunk=st.integers(1, 12),
    extra=st.integers(0, 40),
    coder=st.sampled_from(CODERS),
    kind=st.sampled_from(["uniform", "top", "few"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_unsegmented(
    n_streams, n_codebooks, codebook_size, per_chunk, extra, coder, kind, seed
):
    header = make_header(
        n_streams, n_codebooks=n_codebooks, codebook_size=codebook_size, frames_per_chunk=per_chunk
    )
    tokens = random_tokens(
        np.random.default_rng(seed), (n_streams, n_codebooks, extra), codebook_size, kind
    )
    check_round_trip(header, tokens, coder)


@settings(max_examples=60, deadline=None)
@given(
    n_streams=st.integers(1, 3),
    n_codebooks=st.integers(1, 8),
    length=st.integers(1, 24),
    stride_fraction=st.floats(0.05, 1.0),
    per_chunk=st.integers(1, 3),
    samples=st.integers(0, 200),
    coder=st.sampled_from(CODERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_segmented(
    n_streams, n_codebooks, length, stride_fraction, per_chunk, samples, coder, seed
):
    stride = max(1, int(length * stride_fraction))
    header = segmented_header(
        4,
        length,
        stride,
        per_chunk,
        n_streams=n_streams,
        n_codebooks=n_codebooks,
        source_channels=n_streams,
        source_frames=samples,
        model_samples=samples,
    )
    frames = encodec_segments(header, samples)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 1024, (n_streams, n_codebooks, sum(frames)))
    scales = rng.uniform(1e-3, 10, (len(frames), n_streams)).astype(np.float32)
    check_round_trip(header, tokens, coder, segment_frames=frames, scales=scales)
    container = loads(dumps(header, tokens, segment_frames=frames, scales=scales, coder=coder))
    assert container.segment_frames.tolist() == frames
    assert np.array_equal(container.scales, scales)


@pytest.mark.parametrize("frames", [0, 1, 7, 749, 750, 751, 1499, 1500, 1501])
def test_chunk_boundaries(frames):
    header = make_header(n_codebooks=8, frames_per_chunk=750)
    tokens = np.random.default_rng(frames).integers(0, 1024, (8, frames))
    data = dumps(header, tokens)
    with ContainerReader(io.BytesIO(data)) as reader:
        sizes = [chunk.n_frames for chunk in reader]
    assert sizes == [750] * (frames // 750) + ([frames % 750] if frames % 750 else [])
    assert np.array_equal(read_tokens(io.BytesIO(data)), tokens)


def test_48khz_segment_layout():
    """A source of 47,521 model samples: segments of 149 and 1 frames, one chunk."""
    header = make_header(
        model_sample_rate=48_000,
        source_sample_rate=44_100,
        resampler=1,
        n_codebooks=4,
        model_channels=2,
        source_channels=2,
        segment_length=48_000,
        segment_stride=47_520,
        frames_per_chunk=750,
        source_frames=43_660,
        model_samples=47_521,
    )
    frames = encodec_segments(header, 47_521)
    assert frames == [149, 1]
    tokens = np.random.default_rng(0).integers(0, 1024, (4, 150))
    container = loads(dumps(header, tokens, segment_frames=frames, scales=[[0.5], [0.25]]))
    assert container.segment_frames.tolist() == [149, 1]
    assert container.scales.tolist() == [[0.5], [0.25]]
    long = encodec_segments(header, 48_000 * 60)
    assert long[:-2] == [150] * (len(long) - 2)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 40), max_size=8), seed=st.integers(0, 2**32 - 1))
def test_bytes_do_not_depend_on_how_writes_are_split(cuts, seed):
    header = make_header(2, n_codebooks=3, frames_per_chunk=7)
    tokens = np.random.default_rng(seed).integers(0, 1024, (2, 3, 40))
    buffer = io.BytesIO()
    with ContainerWriter(buffer, header) as writer:
        for part in np.split(tokens, sorted(cuts), axis=2):
            writer.write(part)
    assert buffer.getvalue() == dumps(header, tokens)
    assert writer.bytes_written == len(buffer.getvalue())


def test_path_round_trip(tmp_path):
    header = make_header(n_codebooks=4, frames_per_chunk=10)
    tokens = np.random.default_rng(1).integers(0, 1024, (4, 25))
    path = tmp_path / "a.tpk"
    with ContainerWriter(path, header) as writer:
        writer.write(tokens)
    assert np.array_equal(read_tokens(path), tokens)
    assert np.array_equal(read_tokens(str(path)), tokens)
    assert read_header(path) == written(header)
    assert path.read_bytes() == dumps(header, tokens)


def test_header_lengths_given_at_close():
    header = make_header(source_frames=None, model_samples=None)
    tokens = np.random.default_rng(2).integers(0, 1024, (2, 9))
    buffer = io.BytesIO()
    with ContainerWriter(buffer, header) as writer:
        writer.write(tokens)
        trailer = writer.close(source_frames=9 * 320, model_samples=9 * 320)
    container = loads(buffer.getvalue())
    assert container.header.source_frames is None
    assert container.trailer == trailer
    assert (trailer.source_frames, trailer.model_samples, trailer.total_frames) == (2880, 2880, 9)
    assert buffer.getvalue()[116:124] == UNKNOWN.to_bytes(8, "little")


def _pipe_round_trip(header: Header, tokens: np.ndarray, buffering: int) -> None:
    read_fd, write_fd = os.pipe()
    errors = []

    def produce():
        try:
            with (
                os.fdopen(write_fd, "wb", buffering=buffering) as pipe,
                ContainerWriter(pipe, header) as writer,
            ):
                for start in range(0, tokens.shape[-1], 333):
                    writer.write(tokens[..., start : start + 333])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    thread = threading.Thread(target=produce)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=buffering) as pipe, ContainerReader(pipe) as reader:
        assert reader.header == written(header)
        got = np.concatenate([chunk.tokens for chunk in reader], axis=2)
        assert reader.trailer.total_frames == tokens.shape[-1]
    thread.join()
    assert not errors
    assert np.array_equal(got, tokens)


@pytest.mark.parametrize("buffering", [0, -1])
def test_pipe_writer_and_reader(buffering):
    """Over 64 KiB through a real pipe (writer in a thread), raw and buffered ends."""
    header = make_header(
        2,
        n_codebooks=8,
        frames_per_chunk=750,
        source_frames=3 * 24_000 * 11,
        model_samples=3 * 24_000 * 11,
    )
    tokens = np.random.default_rng(3).integers(0, 1024, (2, 8, 4000))
    _pipe_round_trip(header, tokens, buffering)


def test_pipe_reader_on_finished_bytes():
    header = make_header(n_codebooks=4, frames_per_chunk=5)
    tokens = np.random.default_rng(4).integers(0, 1024, (4, 12))
    data = dumps(header, tokens)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        container = read_container(pipe)
    assert np.array_equal(container.tokens[0], tokens)


def test_exception_in_with_block_leaves_no_end(tmp_path):
    header = make_header(frames_per_chunk=2)
    path = tmp_path / "partial.tpk"
    with pytest.raises(RuntimeError), ContainerWriter(path, header) as writer:
        writer.write(np.zeros((2, 5), np.int64))
        raise RuntimeError("interrupted")
    with pytest.raises(Truncated, match="before the END chunk"):
        read_container(path)


def test_close_needs_unknown_lengths():
    writer = ContainerWriter(io.BytesIO(), make_header(source_frames=None))
    with pytest.raises(ValueError, match="source_frames"):
        writer.close()
    with pytest.raises(ValueError, match="contradicts"):
        writer.close(source_frames=1, model_samples=5)
    writer.close(source_frames=1)
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros((2, 1), np.int64))


@pytest.mark.parametrize(
    ("tokens", "error"),
    [
        (np.zeros((2, 3), np.float32), TypeError),
        (np.zeros((3, 3), np.int64), ValueError),
        (np.zeros((1, 1, 2, 3), np.int64), ValueError),
        (np.full((2, 3), 1024), ValueError),
        (np.full((2, 3), -1), ValueError),
    ],
)
def test_writer_rejects_bad_tokens(tokens, error):
    writer = ContainerWriter(io.BytesIO(), make_header())
    with pytest.raises(error):
        writer.write(tokens)


def test_writer_api_misuse():
    with pytest.raises(ValueError, match="coder"):
        ContainerWriter(io.BytesIO(), make_header(), coder="brotli")
    with pytest.raises(ValueError, match="minor"):
        ContainerWriter(io.BytesIO(), make_header(version_minor=5))  # 1.5 is not known yet
    with pytest.raises(ValueError, match="another prior"):
        ContainerWriter(io.BytesIO(), make_header(version_minor=1, prior_sha256=b"x" * 32),
                        prior=uniform_prior(1024, 4))
    with pytest.raises(PriorNotFound):  # a header that names a prior nobody has
        ContainerWriter(io.BytesIO(), make_header(version_minor=1, prior_sha256=b"x" * 32))
    with pytest.raises(ValueError, match="does not use a prior"):
        ContainerWriter(io.BytesIO(), make_header(), coder="pack",
                        prior=uniform_prior(1024, 4))
    with pytest.raises(ValueError, match="write_segment"):
        ContainerWriter(io.BytesIO(), segmented_header(4, 20, 18, 2)).write(
            np.zeros((2, 1), np.int64)
        )
    with pytest.raises(ValueError, match=r"use write\(\)"):
        ContainerWriter(io.BytesIO(), make_header()).write_segment(
            np.zeros((2, 1), np.int64), [1.0]
        )
    with pytest.raises(ValueError, match="dumps"):
        dumps(make_header(model_samples=None), np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match="segment_frames"):
        dumps(segmented_header(4, 20, 18, 2), np.zeros((2, 0), np.int64))


def test_write_segment_rules():
    writer = ContainerWriter(io.BytesIO(), segmented_header(4, 20, 18, 2, n_codebooks=1))
    with pytest.raises(ValueError, match=r"1\.\.5 frames"):
        writer.write_segment(np.zeros((1, 6), np.int64), [1.0])
    with pytest.raises(ValueError, match="scale"):
        writer.write_segment(np.zeros((1, 5), np.int64), [1.0, 2.0])
    for bad in (0.0, -1.0, float("nan"), float("inf"), 1e-50):
        with pytest.raises(ValueError, match="finite"):
            writer.write_segment(np.zeros((1, 5), np.int64), [bad])
    writer.write_segment(np.zeros((1, 3), np.int64), [1.0])
    with pytest.raises(ValueError, match="never more than the previous"):
        writer.write_segment(np.zeros((1, 4), np.int64), [1.0])


def test_empty_segmented_container():
    header = segmented_header(4, 20, 18, 2)
    container = loads(
        dumps(header, np.zeros((2, 0), np.int64), segment_frames=[], scales=np.zeros((0, 1)))
    )
    assert container.tokens.shape == (1, 2, 0)
    assert container.segment_frames.shape == (0,) and container.scales.shape == (0, 1)
    assert container.trailer.n_chunks == 0


def test_reader_iterates_once():
    data = dumps(make_header(), np.zeros((2, 3), np.int64))
    reader = ContainerReader(io.BytesIO(data))
    assert len(list(reader)) == 1
    with pytest.raises(ValueError, match="once"):
        iter(reader)
