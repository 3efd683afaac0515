"""encode() and decode(): the library functions the CLI wraps. They print nothing.

encode: read audio -> channel mode -> resample to the model rate -> tokens (segment
by segment for segmented models) -> ContainerWriter. decode: ContainerReader -> check
model and weights -> audio at the model rate -> channels restored -> resample back ->
exactly the source's frame count (or its equivalent at another rate) -> WAV/FLAC.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np

from tokpack._io import atomic_write
from tokpack.codec import audio as audio_io
from tokpack.codec.channels import from_streams, plan_channels, to_streams
from tokpack.codec.registry import DEFAULT_MODEL, ModelSpec, get_spec
from tokpack.codec.threads import torch_threads
from tokpack.errors import FormatError, ModelError, WeightsMismatch
from tokpack.formats import (
    ChannelMode,
    ContainerReader,
    ContainerWriter,
    Header,
    Resampler,
)

if TYPE_CHECKING:
    from tokpack.codec.framing import TokenBlock
    from tokpack.codec.weights import LoadedModel

Src = str | os.PathLike | BinaryIO
ModelArg = Union[str, "LoadedModel"]


@dataclass
class EncodeResult:
    """What encode() did, in raw numbers (bytes, seconds, bits per second)."""

    model: str
    bandwidth_kbps: float
    n_codebooks: int
    n_streams: int
    channel_mode: str
    source_sample_rate: int
    source_channels: int
    source_frames: int
    duration_s: float
    token_frames: int
    bytes_in: int | None  # source file size, when known
    bytes_out: int  # container size
    bitrate_bps: float  # bytes_out * 8 / duration_s (0.0 for empty input)
    seconds: float  # wall time of the call
    weights_sha256: str  # hex


@dataclass
class DecodeResult:
    """What decode() did. ``bitrate_bps`` is the container's: bytes_in * 8 / duration_s."""

    model: str
    bandwidth_kbps: float
    n_codebooks: int
    source_sample_rate: int
    source_channels: int
    source_frames: int
    duration_s: float
    bytes_in: int  # container size
    bytes_out: int  # audio file size
    bitrate_bps: float
    seconds: float
    weights_sha256: str  # hex, from the container
    weights_match: bool  # False only with force_weights
    sample_rate: int
    channels: int
    frames: int
    clipped_samples: int
    subtype: str
    format: str


@dataclass
class EncodedArray:
    """In-memory result of encode_array(): a ready header and the token blocks."""

    header: Header
    blocks: list[TokenBlock]

    @property
    def tokens(self) -> np.ndarray:
        """uint16 [S, K, T], all blocks concatenated."""
        h = self.header
        if not self.blocks:
            return np.zeros((h.n_streams, h.n_codebooks, 0), np.uint16)
        return np.concatenate([b.tokens for b in self.blocks], axis=2)


def _label(obj: object) -> str:
    return audio_io.source_label(obj)


def _loaded(model: ModelArg, *, weights, device) -> LoadedModel:
    if isinstance(model, str):
        from tokpack.codec.weights import load_model

        return load_model(model, weights=weights, device=device)
    return model


def build_header(spec: ModelSpec, weights_sha256: bytes, n_codebooks: int, *,
                 source_sample_rate: int, source_channels: int, source_frames: int,
                 channel_mode: int, n_streams: int) -> Header:
    """The container header for a source encoded with ``spec``."""
    same = source_sample_rate == spec.sample_rate
    return Header(
        model_id=spec.name,
        weights_sha256=weights_sha256,
        model_sample_rate=spec.sample_rate,
        hop_length=spec.hop_length,
        codebook_size=spec.codebook_size,
        n_codebooks=n_codebooks,
        model_channels=spec.channels,
        source_sample_rate=source_sample_rate,
        source_channels=source_channels,
        n_streams=n_streams,
        channel_mode=channel_mode,
        segment_length=spec.segment_length,
        segment_stride=spec.segment_stride,
        frames_per_chunk=spec.frames_per_chunk,
        resampler=Resampler.NONE if same else Resampler.SINC_HANN,
        source_frames=source_frames,
        model_samples=audio_io.resampled_length(source_frames, source_sample_rate,
                                                spec.sample_rate),
    )


def iter_encode_array(audio: np.ndarray, sample_rate: int, loaded: LoadedModel,
                      bandwidth: float | None = None, *, channels: str = "auto",
                      ) -> tuple[Header, Iterator[TokenBlock]]:
    """Header and a lazy stream of token blocks for float32 audio [frames, channels].

    Runs the model as the iterator is consumed (in the caller's thread settings and
    under torch.inference_mode, which the caller provides). No model call for 0 frames.
    """
    spec = loaded.spec
    bw = spec.default_bandwidth if bandwidth is None else bandwidth
    n_q = spec.n_codebooks(bw)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[1] < 1:
        raise ValueError(f"audio must be [frames, channels], got shape {audio.shape}")
    mode, n_streams = plan_channels(spec.channels, audio.shape[1], channels, spec.name)
    header = build_header(spec, loaded.weights_sha256, n_q, source_sample_rate=sample_rate,
                          source_channels=audio.shape[1], source_frames=audio.shape[0],
                          channel_mode=mode, n_streams=n_streams)

    def blocks() -> Iterator[TokenBlock]:
        if audio.shape[0] == 0:
            return
        import torch

        from tokpack.codec.framing import iter_encode

        # Each stream is resampled on its own: a batched resample rounds differently, and
        # a split stream's tokens should equal those of that channel encoded alone.
        streams = torch.stack([
            audio_io.resample(torch.from_numpy(s), sample_rate, spec.sample_rate)
            for s in to_streams(audio, mode, spec.channels)
        ]).to(loaded.device)
        yield from iter_encode(loaded.model, streams, n_q, segment_length=spec.segment_length,
                               segment_stride=spec.segment_stride)

    return header, blocks()


def encode_array(audio: np.ndarray, sample_rate: int, loaded: LoadedModel,
                 bandwidth: float | None = None, *, channels: str = "auto",
                 threads: int | None = None) -> EncodedArray:
    """Encode float32 audio [frames, channels] in memory: header + token blocks."""
    import torch

    with torch_threads(threads), torch.inference_mode():
        header, blocks = iter_encode_array(audio, sample_rate, loaded, bandwidth,
                                           channels=channels)
        return EncodedArray(header, list(blocks))


def write_blocks(writer: ContainerWriter, blocks) -> int:
    """Feed token blocks to a writer; returns the number of token frames written."""
    frames = 0
    for block in blocks:
        if block.scales is None:
            writer.write(block.tokens)
        else:
            writer.write_segment(block.tokens, block.scales)
        frames += block.tokens.shape[2]
    return frames


def encode(src: Src, dst: Src, *, model: ModelArg = DEFAULT_MODEL,
           bandwidth: float | None = None, weights=None, device: str = "cpu",
           threads: int | None = None, channels: str = "auto", coder: str = "auto",
           ) -> EncodeResult:
    """Encode an audio file (path or binary file object) into a container at ``dst``.

    ``model`` is a model name or a LoadedModel (to reuse one across files). A ``dst``
    path is written atomically; the library always writes (overwrite policy is the
    caller's).
    """
    t0 = time.perf_counter()
    spec = get_spec(model) if isinstance(model, str) else model.spec
    bw = spec.default_bandwidth if bandwidth is None else bandwidth
    spec.n_codebooks(bw)  # a bad bandwidth fails before any work
    audio, info = audio_io.read_audio(src)
    plan_channels(spec.channels, info.channels, channels, spec.name)  # fail before loading
    loaded = _loaded(model, weights=weights, device=device)

    import torch

    with torch_threads(threads), torch.inference_mode():
        header, blocks = iter_encode_array(audio, info.sample_rate, loaded, bw,
                                           channels=channels)
        if isinstance(dst, (str, os.PathLike)):
            with atomic_write(dst) as f, ContainerWriter(f, header, coder=coder) as w:
                frames = write_blocks(w, blocks)
        else:
            with ContainerWriter(dst, header, coder=coder) as w:
                frames = write_blocks(w, blocks)
    duration = info.frames / info.sample_rate
    return EncodeResult(
        model=spec.name,
        bandwidth_kbps=float(bw),
        n_codebooks=header.n_codebooks,
        n_streams=header.n_streams,
        channel_mode=ChannelMode(header.channel_mode).name.lower(),
        source_sample_rate=info.sample_rate,
        source_channels=info.channels,
        source_frames=info.frames,
        duration_s=duration,
        token_frames=frames,
        bytes_in=info.bytes,
        bytes_out=w.bytes_written,
        bitrate_bps=w.bytes_written * 8 / duration if duration > 0 else 0.0,
        seconds=time.perf_counter() - t0,
        weights_sha256=loaded.weights_hex,
    )


class _CountingReader:
    """Counts the bytes a ContainerReader pulls from a file object."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        return data


def check_header_fits(header: Header, spec: ModelSpec) -> None:
    """FormatError if the header's codec fields contradict its model's spec."""
    expected = {
        "model_sample_rate": spec.sample_rate,
        "hop_length": spec.hop_length,
        "codebook_size": spec.codebook_size,
        "model_channels": spec.channels,
        "segment_length": spec.segment_length,
        "segment_stride": spec.segment_stride,
    }
    for field, value in expected.items():
        if getattr(header, field) != value:
            raise FormatError(f"{getattr(header, field)} does not match model {spec.name} "
                              f"(expected {value})", field=field)
    if header.n_codebooks > spec.max_codebooks:
        raise FormatError(f"{header.n_codebooks} codebooks; model {spec.name} has at most "
                          f"{spec.max_codebooks}", field="n_codebooks")


def check_weights(header: Header, loaded: LoadedModel, force: bool = False) -> bool:
    """True if the container's weights hash is the loaded model's; WeightsMismatch otherwise
    (unless ``force``, which returns False)."""
    if header.weights_sha256 == loaded.weights_sha256:
        return True
    if force:
        return False
    raise WeightsMismatch(
        f"container was encoded with {header.model_id} weights "
        f"{header.weights_sha256.hex()[:12]}, but the loaded weights are "
        f"{loaded.weights_hex[:12]} ({loaded.weights_path}); give the matching weights, "
        f"or force decoding with other weights"
    )


def _out_rate(sample_rate, header: Header) -> int:
    if sample_rate == "original":
        return header.source_sample_rate
    if sample_rate == "model":
        return header.model_sample_rate
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample_rate must be 'original', 'model' or an int, got {sample_rate!r}")
    if not 1 <= sample_rate <= 768_000:
        raise ValueError(f"sample_rate {sample_rate} is out of range 1..768000")
    return int(sample_rate)


def decode_model_rate(reader: ContainerReader, loaded: LoadedModel) -> tuple[np.ndarray, int]:
    """All chunks of ``reader`` -> float32 [S, C, model_samples] and source_frames.

    Segmented containers are decoded segment by segment as chunks arrive.
    """
    from tokpack.codec import framing

    header = reader.header
    model = loaded.model
    pieces: list[np.ndarray] = []
    if header.segmented:
        def segments():
            for chunk in reader:
                start = 0
                for n, scales in zip(chunk.segment_frames, chunk.scales):
                    yield chunk.tokens[:, :, start:start + int(n)], scales
                    start += int(n)
        pieces.extend(framing.iter_decode_segmented(model, segments(), header.segment_stride,
                                                    loaded.device))
    else:
        chunks = [c.tokens for c in reader]
        if chunks:
            tokens = np.concatenate(chunks, axis=2)
            if tokens.shape[2]:
                pieces.append(np.stack([framing.decode_frames(model, tokens[s], None,
                                                              loaded.device).cpu().numpy()
                                        for s in range(tokens.shape[0])]))
    trailer = reader.trailer
    n = trailer.model_samples
    shape = (header.n_streams, header.model_channels)
    y = np.concatenate(pieces, axis=2) if pieces else np.zeros((*shape, 0), np.float32)
    if y.shape[2] >= n:
        y = y[:, :, :n]
    else:  # fewer frames than samples: only a hand-made container does that
        y = np.concatenate([y, np.zeros((*shape, n - y.shape[2]), np.float32)], axis=2)
    return y, trailer.source_frames


def decode(src: Src, dst: Src, *, sample_rate="original", subtype: str = "PCM_16",
           format: str | None = None, weights=None, force_weights: bool = False,
           device: str = "cpu", threads: int | None = None, channels: str = "original",
           model: LoadedModel | None = None) -> DecodeResult:
    """Decode a container (path or binary file object) to WAV/FLAC at ``dst``.

    ``sample_rate``: "original" (default), "model", or Hz. ``channels``: "original"
    restores the source's channel count, "model" keeps the model's (one per stream when
    split). ``model``: a LoadedModel to reuse (used if its name matches the container).
    WeightsMismatch when the container was made with other weights, unless
    ``force_weights``.
    """
    if channels not in ("original", "model"):
        raise ValueError(f"channels must be 'original' or 'model', got {channels!r}")
    t0 = time.perf_counter()
    label = _label(src)
    owned = isinstance(src, (str, os.PathLike))
    f = open(src, "rb") if owned else src
    counter = _CountingReader(f)
    try:
        import torch

        with ContainerReader(counter, path=label) as reader, \
                torch_threads(threads), torch.inference_mode():
            header = reader.header
            spec = get_spec(header.model_id)
            check_header_fits(header, spec)
            out_rate = _out_rate(sample_rate, header)
            if model is not None and model.spec.name == spec.name:
                loaded = model
            else:
                loaded = _loaded(spec.name, weights=weights, device=device)
            match = check_weights(header, loaded, force_weights)
            y, source_frames = decode_model_rate(reader, loaded)
            pcm = from_streams(y, header.channel_mode, header.source_channels,
                               restore=channels == "original")
            want = audio_io.resampled_length(source_frames, header.source_sample_rate, out_rate)
            x = torch.from_numpy(np.ascontiguousarray(pcm.T))
            x = audio_io.fit_length(audio_io.resample(x, spec.sample_rate, out_rate), want)
            out = np.ascontiguousarray(x.numpy().T)
    except ModelError as exc:
        if exc.path is None:
            exc.path = label
        raise
    except FormatError as exc:
        if exc.path is None:
            exc.path = label
        raise
    finally:
        if owned:
            f.close()
    written = audio_io.write_audio(dst, out, out_rate, subtype=subtype, format=format)
    duration = source_frames / header.source_sample_rate
    return DecodeResult(
        model=spec.name,
        bandwidth_kbps=header.bandwidth_bps / 1000,
        n_codebooks=header.n_codebooks,
        source_sample_rate=header.source_sample_rate,
        source_channels=header.source_channels,
        source_frames=source_frames,
        duration_s=duration,
        bytes_in=counter.count,
        bytes_out=written.bytes,
        bitrate_bps=counter.count * 8 / duration if duration > 0 else 0.0,
        seconds=time.perf_counter() - t0,
        weights_sha256=header.weights_sha256.hex(),
        weights_match=match,
        sample_rate=out_rate,
        channels=written.channels,
        frames=written.frames,
        clipped_samples=written.clipped_samples,
        subtype=written.subtype,
        format=written.format,
    )
