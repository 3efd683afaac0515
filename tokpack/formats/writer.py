"""ContainerWriter: header, TOKENS chunks as frames arrive, END on close; never seeks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from typing import BinaryIO

import numpy as np
import zstandard

from tokpack.formats import coding, ctx, spec
from tokpack.formats.chunk import (
    Trailer,
    covered_samples,
    encode_segment_table,
    frame_chunk,
    tokens_payload_limit,
)
from tokpack.formats.header import Header, lengths_agree
from tokpack.formats.prior import Prior, resolve


# How often tokpack's writers start the CTX models afresh (FORMAT.md "Carried models"):
# a damaged chunk costs at most this much audio, a reader may start at any keyframe, and
# each keyframe costs the bytes of relearning a file's codes (docs/ENTROPY.md, "Carried
# models": ~2 % at a minute with the uniform prior, nothing measurable with a trained one).
KEYFRAME_SECONDS = 60.0


def keyframe_chunks(header: Header, seconds: float | None = None) -> int:
    """Chunks per keyframe for about ``seconds`` of audio (default KEYFRAME_SECONDS; 0:
    every chunk stands alone), at least 1 and at most the format's 65,535."""
    seconds = KEYFRAME_SECONDS if seconds is None else seconds
    if not seconds >= 0:
        raise ValueError(f"the keyframe interval must be >= 0 seconds, got {seconds!r}")
    chunk_s = header.frames_per_chunk / header.frame_rate
    return int(min(max(round(seconds / chunk_s), 1), spec.MAX_CTX_KEYFRAME))


class ContainerWriter:
    """Write a container to a path or a binary file object (a pipe is fine).

    As a context manager it writes END on a clean exit; after an exception it writes
    nothing more, so the output stays visibly incomplete for the caller to discard.

    ``keyframe``: with a CTX coder (``auto`` or ``ctx``), carry the CTX models on from
    chunk to chunk (coder 4), starting afresh every ``keyframe`` chunks: a 1.4 header
    records it (FORMAT.md "Carried models"). 1: every chunk stands alone. None: the
    header's ``ctx_keyframe``. Other coders ignore it.

    ``live``: a live container (FORMAT.md "Live containers"; unsegmented headers only): a
    1.3 header, a LIVE chunk after it, every chunk flushed as soon as it is written, and
    on close a LAST chunk ahead of the last TOKENS chunk (or of END, when that chunk went
    out already), so that a reader knows the length before the last audio.
    """

    def __init__(
        self,
        dst: str | os.PathLike | BinaryIO,
        header: Header,
        *,
        coder: str = "auto",
        zstd_level: int = spec.ZSTD_LEVEL,
        prior: Prior | None = None,
        live: bool = False,
        keyframe: int | None = None,
    ) -> None:
        if coder not in coding.CODER_CHOICES:
            raise ValueError(
                f"coder must be one of {', '.join(coding.CODER_CHOICES)}, got {coder!r}"
            )
        if not 0 <= header.version_minor <= spec.VERSION_MINOR:
            raise ValueError(
                f"this writer writes versions {spec.VERSION_MAJOR}.0 to "
                f"{spec.VERSION_MAJOR}.{spec.VERSION_MINOR}, the header says minor version "
                f"{header.version_minor}"
            )
        if coder in ("auto", "ctx"):
            # CTX may code chunks: a 1.1 header names the prior (zeros: the uniform one)
            if prior is None:  # the one a 1.1 header names (found as a reader finds it)
                prior = resolve(
                    header.prior_sha256 or spec.UNIFORM_PRIOR_SHA256,
                    codebook_size=header.codebook_size,
                    n_codebooks=header.n_codebooks,
                )
            if header.version_minor and header.prior_sha256 != prior.sha256:
                raise ValueError("the header names another prior than the one given")
            header = dataclasses.replace(header, version_minor=max(header.version_minor, 1),
                                         prior_sha256=prior.sha256)
            keyframe = header.ctx_keyframe if keyframe is None else keyframe
            if keyframe != 1:
                header = dataclasses.replace(
                    header, version_minor=max(header.version_minor, spec.CARRY_MINOR),
                    ctx_keyframe=keyframe)
            if prior.codebook_size != header.codebook_size or prior.n_codebooks < header.n_codebooks:
                raise ValueError(
                    f"the prior has {prior.n_codebooks} codebook(s) of {prior.codebook_size} "
                    f"codes; the header needs {header.n_codebooks} of {header.codebook_size}"
                )
        elif prior is not None:
            raise ValueError(f"coder {coder!r} does not use a prior")
        if live:
            if header.segmented:
                raise ValueError("a live container is unsegmented (FORMAT.md, Live containers)")
            header = dataclasses.replace(header, version_minor=max(header.version_minor,
                                                                   spec.LIVE_MINOR))
        self.live = live
        self.header = header
        self._prior = prior
        self._coder = coder
        self._compressor = zstandard.ZstdCompressor(
            level=zstd_level, write_content_size=True, write_checksum=False
        )
        self._owned = isinstance(dst, (str, os.PathLike))
        self._file: BinaryIO = open(dst, "wb") if self._owned else dst
        self._closed = False
        self._bytes_written = 0
        self._digest = hashlib.blake2b(digest_size=spec.DIGEST_SIZE)
        self._n_chunks = 0
        self._total_frames = 0
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._segments: list[tuple[np.ndarray, np.ndarray]] = []
        self._max_segment_frames = header.segment_frames
        self._n_segments = 0
        self._carry = (ctx.Carry(header.codebook_size, header.n_streams, header.n_codebooks)
                       if header.ctx_keyframe > 1 and prior is not None else None)
        try:
            self._write(header.to_bytes())
            if live:
                self._write(frame_chunk(spec.LIVE_CHUNK, 0, 0, b""))
                self._flush()
        except BaseException:
            self._release()
            raise

    @property
    def bytes_written(self) -> int:
        return self._bytes_written

    def __enter__(self) -> ContainerWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._closed:
            self.close()
        else:
            self._release()

    def write(self, tokens) -> None:
        """Append frames: [n_streams, K, T] (or [K, T] for one stream), any integer dtype."""
        self._check_open()
        if self.header.segmented:
            raise ValueError("the header is segmented: use write_segment()")
        array = self._as_tokens(tokens)
        if array.shape[2] == 0:
            return
        self._pending.append(array)
        self._pending_frames += array.shape[2]
        per_chunk = self.header.frames_per_chunk
        if self._pending_frames < per_chunk:
            return
        merged = np.concatenate(self._pending, axis=2)
        full = merged.shape[2] - merged.shape[2] % per_chunk
        for start in range(0, full, per_chunk):
            self._emit(merged[:, :, start : start + per_chunk])
        self._pending = [merged[:, :, full:]] if full < merged.shape[2] else []
        self._pending_frames = merged.shape[2] - full

    def write_segment(self, tokens, scales) -> None:
        """Append one segment: its tokens (1..segment_frames frames) and one scale per stream."""
        self._check_open()
        if not self.header.segmented:
            raise ValueError("the header is not segmented: use write()")
        array = self._as_tokens(tokens)
        n_frames = array.shape[2]
        if not 1 <= n_frames <= self._max_segment_frames:
            raise ValueError(
                f"a segment here must have 1..{self._max_segment_frames} frames, got {n_frames} "
                f"(at most segment_frames={self.header.segment_frames}, "
                "never more than the previous segment)"
            )
        scale = np.asarray(scales, dtype=np.float64).reshape(-1)
        if scale.size != self.header.n_streams:
            raise ValueError(f"need {self.header.n_streams} scale(s), got {scale.size}")
        scale = scale.astype(np.float32)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"scales must be finite and > 0 as float32, got {scale.tolist()}")
        self._segments.append((array, scale))
        self._max_segment_frames = n_frames
        self._n_segments += 1
        if len(self._segments) == self.header.segments_per_chunk:
            self._emit_segments()

    def close(
        self, *, source_frames: int | None = None, model_samples: int | None = None,
        last=None,
    ) -> Trailer:
        """Flush the last chunk and write END; the lengths are needed if the header lacks them.

        ``last``: the final frames (as for :meth:`write`). A live writer puts LAST before
        the chunk that holds the signal's end, so they must come here, not through
        :meth:`write`, which emits a full chunk at once."""
        self._check_open()
        source_frames = _final_length("source_frames", self.header.source_frames, source_frames)
        model_samples = _final_length("model_samples", self.header.model_samples, model_samples)
        if last is not None and not self.live:
            self.write(last)
        elif last is not None:
            array = self._as_tokens(last)
            if array.shape[2]:
                self._pending.append(array)
                self._pending_frames += array.shape[2]
        if self.live:  # LAST ahead of the last chunk, if it is still to come
            if self._pending:
                merged = np.concatenate(self._pending, axis=2)
                per_chunk = self.header.frames_per_chunk
                before = (merged.shape[2] - 1) // per_chunk * per_chunk
                for start in range(0, before, per_chunk):
                    self._emit(merged[:, :, start : start + per_chunk])
                self._pending = [merged[:, :, before:]]
            self._write(frame_chunk(spec.LAST_CHUNK, 0, 0,
                                    struct.pack(spec.LAST_STRUCT, source_frames, model_samples)))
        if self._pending:
            self._emit(np.concatenate(self._pending, axis=2))
            self._pending, self._pending_frames = [], 0
        if self._segments:
            self._emit_segments()
        covered = covered_samples(self.header, self._total_frames, self._n_segments, self._max_segment_frames)
        if model_samples > covered:
            raise ValueError(f"model_samples {model_samples} is more than the {covered} the "
                             f"{self._total_frames} frames stand for (a reader rejects it)")
        if not lengths_agree(source_frames, model_samples, self.header.source_sample_rate,
                             self.header.model_sample_rate):
            raise ValueError(f"source_frames {source_frames} is longer than model_samples "
                             f"{model_samples} allows (a reader rejects it)")
        trailer = Trailer(
            n_chunks=self._n_chunks,
            total_frames=self._total_frames,
            source_frames=source_frames,
            model_samples=model_samples,
            token_digest=self._digest.digest(),
        )
        self._write(frame_chunk(spec.ChunkType.END, 0, 0, trailer.to_bytes()))
        self._flush()
        self._release()
        return trailer

    def _flush(self) -> None:
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()

    def _release(self) -> None:
        self._closed = True
        if self._owned:
            self._file.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the container writer is closed")

    def _as_tokens(self, tokens) -> np.ndarray:
        header = self.header
        array = np.asarray(tokens)
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"tokens must be integers, got dtype {array.dtype}")
        if array.ndim == 2 and header.n_streams == 1:
            array = array[np.newaxis]
        if array.ndim != 3 or array.shape[:2] != (header.n_streams, header.n_codebooks):
            two_d = " or [K, T]" if header.n_streams == 1 else ""
            raise ValueError(
                f"tokens must have shape [{header.n_streams}, {header.n_codebooks}, T]{two_d}, "
                f"got {list(array.shape)}"
            )
        if array.size and (array.min() < 0 or array.max() >= header.codebook_size):
            raise ValueError(
                f"tokens must be in 0..{header.codebook_size - 1}, got {array.min()}..{array.max()}"
            )
        return array.astype(np.uint16)

    def _emit_segments(self) -> None:
        tokens = np.concatenate([array for array, _ in self._segments], axis=2)
        frames = np.array([array.shape[2] for array, _ in self._segments])
        scales = np.stack([scale for _, scale in self._segments])
        self._segments = []
        self._emit(tokens, encode_segment_table(frames, scales), len(frames))

    def _emit(self, tokens: np.ndarray, table: bytes = b"", n_segments: int = 0) -> None:
        values = np.ascontiguousarray(tokens).ravel()
        header = self.header
        keyframe = self._n_chunks % header.ctx_keyframe == 0
        rows = None  # the models a coder-4 chunk starts from (between keyframes)
        if self._carry is not None and not keyframe:
            rows = self._carry.begin()
        coder, coded = coding.encode(
            tokens, header.bits_per_code, self._coder, self._compressor,
            prior=self._prior, codebook_size=header.codebook_size, rows=rows,
        )
        if len(table) + len(coded) > tokens_payload_limit(header, tokens.shape[2], n_segments):
            # only a forced CTX can come out larger than zstd's bound: pack such a chunk
            coder, coded = spec.Coder.PACK, coding.pack(values, header.bits_per_code)
        if self._carry is not None:
            self._carry.end(tokens, coder, self._prior, keyframe=keyframe,
                            rows=rows if coder == spec.Coder.CTX_CARRY else None)
        self._write(frame_chunk(spec.ChunkType.TOKENS, coder, tokens.shape[2], table + coded))
        self._digest.update(table)
        self._digest.update(values.astype("<u2").tobytes())
        self._n_chunks += 1
        self._total_frames += tokens.shape[2]
        if self.live:
            self._flush()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]
        self._bytes_written += len(data)


def _final_length(name: str, in_header: int | None, given: int | None) -> int:
    if given is None:
        if in_header is None:
            raise ValueError(f"{name} is not in the header: pass close({name}=...)")
        return in_header
    if (
        isinstance(given, bool)
        or not isinstance(given, (int, np.integer))
        or not 0 <= given <= spec.MAX_LENGTH
    ):
        raise ValueError(f"{name} must be an integer in 0..2^48, got {given!r}")
    if in_header is not None and given != in_header:
        raise ValueError(f"{name}={given} contradicts the header's {in_header}")
    return int(given)
