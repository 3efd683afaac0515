"""encode_live(): audio from a pipe to a live container, a packet at a time.

The pieces (docs/PERFORMANCE.md, "Live"): :class:`~tokpack.codec.liveio.PipeReader`
hands over the frames a pipe holds as soon as they arrive; the resampler and the model
run live (``SincResampler(live=True)``, ``stream_encoder(live=True)``: every call on what
has arrived, a code frame as soon as its samples are in); the
:class:`~tokpack.formats.ContainerWriter` writes a live container (FORMAT.md "Live
containers": a LIVE chunk, chunks of a packet's frames flushed as soon as they fill, and
LAST before the chunk that ends the signal, so a decoder knows the exact length before the
last audio arrives). ``decode(live=True)`` is the other half.

Ctrl-C (SIGINT) ends a live recording as the end of its input would: the frames that came
are encoded and the container is completed with LAST and END (a second Ctrl-C aborts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from typing import BinaryIO

from tokpack._io import atomic_write
from tokpack.codec import audio as audio_io
from tokpack.codec.channels import plan_channels
from tokpack.codec.engine import (
    EncodeResult,
    ModelArg,
    Src,
    _check_new,
    _EncodePipeline,
    _loaded,
    _TpkWriters,
    build_header,
    write_blocks,
)
from tokpack.codec.liveio import PcmFormat, PipeReader
from tokpack.codec.registry import DEFAULT_MODEL, ModelSpec, check_live, get_spec
from tokpack.codec.threads import torch_threads
from tokpack.errors import UsageError
from tokpack.formats import ChannelMode

#: the default packet: 40 ms of frames (3 at 75 Hz; Mimi's 80 ms frames: 1)
PACKET_MS = 40.0


def packet_frames(spec: ModelSpec, packet_ms: float = PACKET_MS) -> int:
    """Frames per packet (container chunk) for ``packet_ms`` milliseconds: at least one."""
    if not 0 < packet_ms <= 10_000:
        raise UsageError(f"packet of {packet_ms:g} ms is out of range (0, 10000]")
    return max(1, round(packet_ms * spec.frame_rate / 1000))


class _Stop(Exception):
    """Ctrl-C while waiting for input: the input ends here."""


@contextlib.contextmanager
def _sigint_ends_input():
    """While active, a first SIGINT ends the input (raising :class:`_Stop` only while
    ``state["waiting"]``, else at the next wait); a second one is KeyboardInterrupt."""
    state = {"waiting": False, "stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        if state["waiting"]:
            raise _Stop

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _blocks(reader: PipeReader, state: dict):
    """The reader's blocks until its input ends or Ctrl-C stops it."""
    it = reader.blocks()
    while not state["stop"]:
        state["waiting"] = True
        try:
            block = next(it)
        except (StopIteration, _Stop):
            return
        finally:
            state["waiting"] = False
        yield block


def encode_live(src: Src | BinaryIO, dst: Src, *, model: ModelArg = DEFAULT_MODEL,
                bandwidth: float | None = None, weights=None, device: str = "cpu",
                threads: int | None = 1, channels: str = "auto", coder: str = "auto",
                prior=None, packet_ms: float = PACKET_MS, raw: PcmFormat | None = None,
                overwrite: bool = False, keyframe: float | None = None) -> EncodeResult:
    """Encode audio from ``src`` (a pipe, stdin, or a file) as it arrives into a live
    container at ``dst``, each packet written and flushed as soon as it is coded.

    ``src`` is a WAV (its header parsed here: a pipe cannot seek) or, with ``raw``,
    headerless little-endian PCM (:func:`tokpack.codec.liveio.raw_format`). Only causal
    models run live (UsageError otherwise). ``packet_ms``: the audio per container chunk
    (rounded to whole frames, at least one). ``threads`` defaults to 1: a live call is
    small, and a second thread costs more than it saves (docs/PERFORMANCE.md, "Live").
    Other options as for :func:`tokpack.codec.engine.encode`.
    """
    t0 = time.perf_counter()
    _check_new(dst, overwrite)
    spec = get_spec(model) if isinstance(model, str) else model.spec
    check_live(spec)
    bw = spec.default_bandwidth if bandwidth is None else bandwidth
    n_q = spec.n_codebooks(bw)
    per_packet = packet_frames(spec, packet_ms)
    new_writer = _TpkWriters(coder, prior, live=True, keyframe=keyframe)
    label = audio_io.source_label(src)
    owned = isinstance(src, (str, os.PathLike))
    f = open(src, "rb", buffering=0) if owned else src  # noqa: SIM115 - closed below
    try:
        reader = PipeReader(f, label, raw)
        fmt = reader.fmt
        mode, n_streams = plan_channels(spec.channels, fmt.channels, channels, spec.name)
        loaded = _loaded(model, weights=weights, device=device)
        header = build_header(spec, loaded.weights_sha256, n_q,
                              source_sample_rate=fmt.sample_rate, source_channels=fmt.channels,
                              source_frames=0, channel_mode=mode, n_streams=n_streams)
        header = dataclasses.replace(header, source_frames=None, model_samples=None,
                                     frames_per_chunk=per_packet)

        import torch

        def run(out: BinaryIO) -> tuple[int, int]:
            with torch_threads(threads), torch.inference_mode(), _sigint_ends_input() as state:
                writer = new_writer(out, header)
                pipe = _EncodePipeline(loaded, n_q, mode, n_streams, fmt.sample_rate, live=True)
                frames = 0
                for block in _blocks(reader, state):
                    frames += write_blocks(writer, pipe.feed(block))
                tail = pipe.finish()  # the frames that hold the signal's end: after LAST
                frames += sum(b.tokens.shape[2] for b in tail)
                n = reader.frames_read
                writer.close(source_frames=n,
                             model_samples=audio_io.resampled_length(n, fmt.sample_rate,
                                                                     spec.sample_rate),
                             last=tail[0].tokens if tail else None)
                return frames, writer.bytes_written

        if isinstance(dst, (str, os.PathLike)):
            with atomic_write(dst, overwrite=overwrite) as out:
                frames, bytes_out = run(out)
        else:
            frames, bytes_out = run(dst)
    finally:
        if owned:
            f.close()
    duration = reader.frames_read / fmt.sample_rate
    return EncodeResult(
        model=spec.name, bandwidth_kbps=float(bw), n_codebooks=n_q, n_streams=n_streams,
        channel_mode=ChannelMode(mode).name.lower(), source_sample_rate=fmt.sample_rate,
        source_channels=fmt.channels, source_frames=reader.frames_read, duration_s=duration,
        token_frames=frames, bytes_in=reader.bytes_read, bytes_out=bytes_out,
        bitrate_bps=bytes_out * 8 / duration if duration > 0 else 0.0,
        seconds=time.perf_counter() - t0, weights_sha256=loaded.weights_hex,
        prior_sha256=new_writer.prior_sha256, prior_note=new_writer.prior_note)

