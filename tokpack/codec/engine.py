"""encode() and decode(): the library functions the CLI wraps. They print nothing.

Both stream, so memory does not grow with the length of the audio:

encode: audio blocks (soundfile) -> channel mode -> resampled to the model rate
(resampler.SincResampler) -> the model, chunk by chunk (streaming.CausalEncoder, or
batches of segments for a segmented model) -> token blocks -> ContainerWriter, which
emits TOKENS chunks as they fill.

decode: ContainerReader chunk by chunk -> check model and weights -> the decoder, chunk
by chunk -> audio at the model rate, trimmed to ``model_samples`` -> channels restored
-> resampled back -> exactly the source's frame count (or its equivalent at another
rate) -> WAV/FLAC blocks (a WAV streams even to a pipe).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np

from tokpack._io import atomic_write
from tokpack.codec import audio as audio_io
from tokpack.codec.channels import from_streams, plan_channels, to_streams
from tokpack.codec.memory import release_memory
from tokpack.codec.registry import DEFAULT_MODEL, ModelSpec, get_spec
from tokpack.codec.threads import torch_threads
from tokpack.codec.tokens_io import ChunkSource, CountingReader, Src, open_tokens
from tokpack.errors import AudioError, FormatError, ModelError, OutputError, UsageError, WeightsMismatch
from tokpack.formats import (
    ChannelMode,
    ContainerReader,
    ContainerWriter,
    Header,
    Resampler,
)
from tokpack.formats.chunk import chunk_sample
from tokpack.formats.spec import GENERIC_PRIOR_ID
from tokpack.formats.salvage import LostRange, SalvageReader
from tokpack.formats.writer import keyframe_chunks

if TYPE_CHECKING:
    from tokpack.codecs.encodec.framing import TokenBlock
    from tokpack.codecs.base import LoadedModel

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
    prior_sha256: str | None = None  # hex, the CTX prior the container names (None: no CTX)
    #: why the default prior was not used (no prior made for these weights), else None
    prior_note: str | None = None
    #: estimated fraction of CTX bytes a prior trained for the weights would save, where the
    #: generic prior coded and ``estimate_prior_gain`` asked (train.prior_gain), else None
    prior_gain: float | None = None


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
    weights_sha256: str  # hex, from the container ("" for .ecdc, which records none)
    weights_match: bool  # False only with force_weights (True for .ecdc: nothing to compare)
    sample_rate: int
    channels: int
    frames: int
    clipped_samples: int
    subtype: str
    format: str
    lost: list[LostRange] | None = None  # with salvage: what was lost ([] if nothing)
    prior_sha256: str | None = None  # hex, the CTX prior the container names (None: none)
    notes: list[str] = field(default_factory=list)  # with salvage: where END was not believed


@dataclass
class EncodedArray:
    """In-memory result of encode_array(): a ready header and the token blocks.

    ``tokens`` [streams, codebooks, frames] is what a language model reads; the segmented
    48 kHz model adds ``segment_frames`` and ``scales`` (None otherwise). ``to_bytes()``
    makes the container, decode_tokens() the audio."""

    header: Header
    blocks: list[TokenBlock]

    @property
    def tokens(self) -> np.ndarray:
        """uint16 [S, K, T], all blocks concatenated."""
        h = self.header
        if not self.blocks:
            return np.zeros((h.n_streams, h.n_codebooks, 0), np.uint16)
        return np.concatenate([b.tokens for b in self.blocks], axis=2)

    @property
    def segment_frames(self) -> np.ndarray | None:
        """int64 [segments]: the frames of each segment (segmented models only)."""
        if not self.header.segmented:
            return None
        return np.array([b.tokens.shape[2] for b in self.blocks], dtype=np.int64)

    @property
    def scales(self) -> np.ndarray | None:
        """float32 [segments, streams]: each segment's scale (segmented models only)."""
        if not self.header.segmented:
            return None
        if not self.blocks:
            return np.zeros((0, self.header.n_streams), np.float32)
        return np.stack([b.scales for b in self.blocks]).astype(np.float32)

    def to_bytes(self, *, coder: str = "auto", prior=None, keyframe: float | None = None) -> bytes:
        """The .tpk container of these tokens (``coder``/``prior``/``keyframe`` as for
        encode(); the default prior is the one made for the weights, as encode() picks it)."""
        from tokpack.formats import dumps

        found = _fitting_prior(prior, self.header) if coder in ("auto", "ctx") else None
        return dumps(self.header, self.tokens, scales=self.scales,
                     segment_frames=self.segment_frames, coder=coder, prior=found,
                     keyframe=keyframe_chunks(self.header, keyframe))


def _label(obj: object) -> str:
    return audio_io.source_label(obj)


def _loaded(model: ModelArg, *, weights, device) -> LoadedModel:
    if isinstance(model, str):
        from tokpack.codec.weights import load_model

        return load_model(model, weights=weights, device=device)
    return model


def _cached(model: ModelArg, *, weights, device) -> LoadedModel:
    """As _loaded, a model given by name loaded once per process (codec.weights.cached_model)."""
    if isinstance(model, str):
        from tokpack.codec.weights import cached_model

        return cached_model(model, weights=weights, device=device)
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


class _EncodePipeline:
    """Source audio blocks [frames, channels] -> token blocks, holding only a few seconds.

    One resampler and one model stream per token stream: each stream is resampled and
    encoded on its own, as a split channel must give the tokens of that channel alone.
    """

    def __init__(self, loaded: LoadedModel, n_q: int, mode: int, n_streams: int,
                 source_rate: int, live: bool = False) -> None:
        from tokpack.codec.resampler import SincResampler

        spec = loaded.spec
        self.mode, self.channels, self.device = mode, spec.channels, loaded.device
        self.segmented = spec.segmented
        self.resamplers = [SincResampler(source_rate, spec.sample_rate, spec.channels, live=live)
                           for _ in range(n_streams)]
        self.encoders = [loaded.stream_encoder(n_q, live=live) for _ in range(n_streams)]

    def feed(self, block: np.ndarray) -> list[TokenBlock]:
        import torch

        streams = to_streams(block, self.mode, self.channels)  # [S, C, n]
        outs = [enc.feed(rs.process(torch.from_numpy(x)).to(self.device))
                for x, rs, enc in zip(streams, self.resamplers, self.encoders)]
        return _token_blocks(outs, self.segmented)

    def finish(self) -> list[TokenBlock]:
        outs = []
        for rs, enc in zip(self.resamplers, self.encoders):
            head = enc.feed(rs.finish().to(self.device))
            tail = enc.finish()
            outs.append(head + tail if self.segmented else np.concatenate([head, tail], axis=1))
        return _token_blocks(outs, self.segmented)


def _token_blocks(outs: list, segmented: bool) -> list[TokenBlock]:
    """What each stream's encoder returned (codes [K, t]; a segmented model's segments)
    -> token blocks, the streams side by side."""
    from tokpack.codecs.encodec.framing import TokenBlock

    if segmented:  # one block per segment
        return [TokenBlock(np.stack([seg.codes for seg in segs]),
                           np.array([seg.scale for seg in segs], dtype=np.float32))
                for segs in zip(*outs)]
    if not outs[0].shape[1]:
        return []
    return [TokenBlock(np.stack(outs), None)]


def _array_header(audio: np.ndarray, sample_rate: int, loaded: LoadedModel,
                  bandwidth: float | None, channels: str) -> tuple[np.ndarray, Header]:
    """The audio as float32 [frames, channels] (ValueError for another shape) and the
    header of its encoding."""
    spec = loaded.spec
    bw = spec.default_bandwidth if bandwidth is None else bandwidth
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[1] < 1:
        raise ValueError(f"audio must be [frames, channels], got shape {audio.shape}")
    mode, n_streams = plan_channels(spec.channels, audio.shape[1], channels, spec.name)
    header = build_header(spec, loaded.weights_sha256, spec.n_codebooks(bw),
                          source_sample_rate=sample_rate, source_channels=audio.shape[1],
                          source_frames=audio.shape[0], channel_mode=mode, n_streams=n_streams)
    return audio, header


def iter_encode_array(audio: np.ndarray, sample_rate: int, loaded: LoadedModel,
                      bandwidth: float | None = None, *, channels: str = "auto",
                      ) -> tuple[Header, Iterator[TokenBlock]]:
    """Header and a lazy stream of token blocks for float32 audio [frames, channels].

    Runs the model as the iterator is consumed (in the caller's thread settings and
    under torch.inference_mode, which the caller provides). No model call for 0 frames.
    """
    audio, header = _array_header(audio, sample_rate, loaded, bandwidth, channels)

    def blocks() -> Iterator[TokenBlock]:
        if audio.shape[0] == 0:
            return
        pipe = _EncodePipeline(loaded, header.n_codebooks, header.channel_mode,
                               header.n_streams, sample_rate)
        step = audio_io.READ_BLOCK_FRAMES
        for start in range(0, audio.shape[0], step):
            yield from pipe.feed(audio[start:start + step])
        yield from pipe.finish()

    return header, blocks()


def encode_arrays(items: list[tuple[np.ndarray, int]], loaded: LoadedModel,
                  bandwidth: float | None = None, *, channels: str = "auto",
                  batch: int = 8) -> list[EncodedArray]:
    """Encode several signals in memory, up to ``batch`` token streams per model pass.

    ``items``: (float32 audio [frames] or [frames, channels], sample rate) pairs. Each
    item's header and tokens are those iter_encode_array() gives it alone: its streams
    (channels as ``channels`` says) are resampled whole as the stream pipeline
    resamples them piece by piece (the same samples), then streams of similar lengths
    go to ``loaded.encode_batch`` together, which returns what each stream's own
    encoder would (LoadedModel.encode_batch). Every item's model-rate audio is held in
    memory at once. Runs in the caller's thread settings and under
    torch.inference_mode, which the caller provides. No model call for 0 frames.
    """
    import torch

    from tokpack.codec.resampler import SincResampler

    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    spec = loaded.spec
    n_q = spec.n_codebooks(spec.default_bandwidth if bandwidth is None else bandwidth)
    headers, streams, owners = [], [], []  # owners[j]: the item stream j belongs to
    for index, (audio, rate) in enumerate(items):
        audio, header = _array_header(audio, rate, loaded, bandwidth, channels)
        headers.append(header)
        if not audio.shape[0]:
            continue
        for x in to_streams(audio, header.channel_mode, spec.channels):
            rs = SincResampler(rate, spec.sample_rate, spec.channels)
            streams.append(torch.cat([rs.process(torch.from_numpy(x)), rs.finish()],
                                     dim=-1).to(loaded.device))
            owners.append(index)
    # neighbours in length share the longest prefix (what a batched pass runs together)
    order = sorted(range(len(streams)), key=lambda j: streams[j].shape[-1])
    encoded: list = [None] * len(streams)
    for start in range(0, len(order), batch):
        group = order[start:start + batch]
        for j, out in zip(group, loaded.encode_batch([streams[j] for j in group], n_q)):
            encoded[j] = out
    outs: list[list] = [[] for _ in headers]  # per item, its streams' encodings in order
    for j, owner in enumerate(owners):
        outs[owner].append(encoded[j])
    return [EncodedArray(header, _token_blocks(out, spec.segmented) if out else [])
            for header, out in zip(headers, outs)]


def encode_array(audio: np.ndarray, sample_rate: int, model: ModelArg = DEFAULT_MODEL,
                 bandwidth: float | None = None, *, channels: str = "auto",
                 threads: int | None = None, weights=None, device: str = "cpu") -> EncodedArray:
    """Encode audio in memory: float samples [frames] or [frames, channels] (full scale
    1.0) at ``sample_rate`` -> header + token blocks (``.tokens``: uint16 [streams,
    codebooks, frames]). ``model``: a name (loaded once per process) or a LoadedModel."""
    import torch

    loaded = _cached(model, weights=weights, device=device)
    with torch_threads(threads), torch.inference_mode():
        header, blocks = iter_encode_array(audio, sample_rate, loaded, bandwidth,
                                           channels=channels)
        return EncodedArray(header, list(blocks))


def decode_tokens(encoded, *, sample_rate="original", model: LoadedModel | None = None,
                  weights=None, force_weights: bool = False, device: str = "cpu",
                  threads: int | None = None, channels: str = "original",
                  ) -> tuple[np.ndarray, int]:
    """Tokens in memory -> (float32 samples [frames, channels], their rate).

    ``encoded``: what encode_array() returns, or a container read with
    formats.read_container (anything with ``header``, ``tokens`` and, for the segmented
    model, ``segment_frames`` and ``scales``). Options as for decode(); the samples are
    not clipped."""
    import io

    import soundfile as sf

    from tokpack.formats import dumps

    container = dumps(encoded.header, encoded.tokens, scales=encoded.scales,
                      segment_frames=encoded.segment_frames, coder="pack")
    if model is None:
        model = _cached(encoded.header.model_id, weights=weights, device=device)
    out = io.BytesIO()
    decode(io.BytesIO(container), out, sample_rate=sample_rate, subtype="FLOAT",
           force_weights=force_weights, threads=threads, channels=channels, model=model)
    samples, rate = sf.read(io.BytesIO(out.getvalue()), dtype="float32", always_2d=True)
    return samples, rate


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


class _LengthChanged(Exception):
    """The audio held another number of frames than its header declared."""

    def __init__(self, frames: int) -> None:
        super().__init__(frames)
        self.frames = frames


def encode(src: Src, dst: Src, *, model: ModelArg = DEFAULT_MODEL,
           bandwidth: float | None = None, weights=None, device: str = "cpu",
           threads: int | None = None, channels: str = "auto", coder: str = "auto",
           container: str = "tpk", lm_weights=None, prior=None,
           overwrite: bool = False, progress: Callable[[float], None] | None = None,
           raw=None, keyframe: float | None = None,
           estimate_prior_gain: bool = False) -> EncodeResult:
    """Encode an audio file (path or binary file object) into a container at ``dst``.

    ``model`` is a model name or a LoadedModel (to reuse one across files). A ``dst``
    path is written atomically, and only if it does not exist unless ``overwrite``
    (OutputError, before any work). The audio is read, resampled, encoded and written a
    block at a time.

    ``container``: "tpk", or "ecdc" for EnCodec's own file format (codecs.encodec.ecdc), whose
    codes are bit-packed, or LM-coded with ``coder="encodec-lm"`` (the LM of the model:
    ``lm_weights`` or the usual search); it holds one token stream and the audio at the
    model's rate and channels only. UsageError for options .ecdc cannot take.

    ``coder`` for .tpk: "auto" (the smallest per chunk, CTX included), "ctx", "zstd",
    "planes" or "pack". ``prior`` (for "auto" and "ctx"): None or "auto" for the prior
    shipped or found for these weights (codec.priors.default_prior; else the generic prior
    of the model's codebooks, formats.prior.generic_prior), "generic", "uniform" (the
    built-in one of format 1.1), a .tpp path, or a formats.prior.Prior. ``keyframe``: seconds between fresh
    starts of the CTX models, which carry on from chunk to chunk in between (default
    formats.writer.KEYFRAME_SECONDS; 0: every chunk stands alone).

    ``estimate_prior_gain``: where the generic prior coded (no prior was made for the
    weights) and ``dst`` is a path, read the container back and estimate what a trained
    prior would save (EncodeResult.prior_gain; the tokens of the first ten minutes).

    ``progress(seconds)`` is called after each block read with the seconds of audio
    read so far. ``raw``: ``src`` is headerless 16-bit little-endian PCM of this
    :class:`~tokpack.codec.liveio.PcmFormat` (:func:`~tokpack.codec.liveio.raw_format`).
    Live encoding (a packet at a time, as audio arrives) is :func:`tokpack.codec.live.encode_live`.
    """
    t0 = time.perf_counter()
    _check_new(dst, overwrite)
    spec = get_spec(model) if isinstance(model, str) else model.spec
    bw = spec.default_bandwidth if bandwidth is None else bandwidth
    n_q = spec.n_codebooks(bw)  # a bad bandwidth fails before any work
    new_writer = _writer_factory(container, coder, channels, spec, lm_weights, prior, keyframe)

    import torch

    with audio_io.AudioReader(src, raw=raw) as reader:
        info = reader.info
        mode, n_streams = plan_channels(spec.channels, info.channels, channels,
                                        spec.name)  # fail before loading
        loaded = _loaded(model, weights=weights, device=device)
        declared = info.frames
        start = None if isinstance(dst, (str, os.PathLike)) else _tell(dst)
        with torch_threads(threads), torch.inference_mode():
            while True:
                header = build_header(spec, loaded.weights_sha256, n_q,
                                      source_sample_rate=info.sample_rate,
                                      source_channels=info.channels, source_frames=declared,
                                      channel_mode=mode, n_streams=n_streams)
                try:
                    frames, bytes_out = _encode_into(dst, reader, header, loaded, n_q,
                                                     new_writer, overwrite, progress)
                    break
                except _LengthChanged as changed:
                    # libsndfile's declared length was wrong (rare): the header is
                    # written first and never patched, so write the container again
                    if declared != info.frames or not _rewind(dst, start):
                        raise AudioError(
                            f"the file holds {changed.frames} frames but declares "
                            f"{declared}, and the output cannot be rewritten",
                            path=reader.label) from None
                    declared = changed.frames
                    reader.rewind()
        source_frames = reader.frames_read
    release_memory()
    duration = source_frames / info.sample_rate
    return EncodeResult(
        model=spec.name,
        bandwidth_kbps=float(bw),
        n_codebooks=header.n_codebooks,
        n_streams=header.n_streams,
        channel_mode=ChannelMode(header.channel_mode).name.lower(),
        source_sample_rate=info.sample_rate,
        source_channels=info.channels,
        source_frames=source_frames,
        duration_s=duration,
        token_frames=frames,
        bytes_in=info.bytes,
        bytes_out=bytes_out,
        bitrate_bps=bytes_out * 8 / duration if duration > 0 else 0.0,
        seconds=time.perf_counter() - t0,
        weights_sha256=loaded.weights_hex,
        prior_sha256=new_writer.prior_sha256,
        prior_note=new_writer.prior_note,
        prior_gain=(_prior_gain(dst) if estimate_prior_gain and new_writer.prior_note
                    and isinstance(dst, (str, os.PathLike)) else None),
    )


#: the tokens prior_gain looks at: a bounded cost, whatever the file's length
GAIN_SECONDS = 600


def _prior_gain(path) -> float | None:
    """train.prior_gain of the container at ``path``, coded with the generic prior."""
    from tokpack.formats.prior import generic_prior
    from tokpack.train import prior_gain

    with ContainerReader(path) as reader:
        header, chunks, frames = reader.header, [], 0
        for chunk in reader:
            chunks.append(chunk.tokens)
            frames += chunk.tokens.shape[2]
            if frames >= GAIN_SECONDS * header.frame_rate:
                break
    return prior_gain(np.concatenate(chunks, axis=2), header.codebook_size,
                      generic_prior(header.codebook_size, header.n_codebooks),
                      frames_per_chunk=header.frames_per_chunk,
                      keyframe=header.ctx_keyframe) if chunks else None


class _TpkWriters:
    """``new_writer(f, header)`` for .tpk; the prior is chosen once, from the weights."""

    def __init__(self, coder: str, prior, *, live: bool = False,
                 keyframe: float | None = None) -> None:
        from tokpack.codec.priors import check_tpk_options

        check_tpk_options(coder, prior)
        if keyframe is not None and not keyframe >= 0:
            raise UsageError(f"the keyframe interval must be >= 0 seconds, got {keyframe}")
        self.keyframe = keyframe
        self.live = live
        self.coder = coder
        self.choice = prior
        self.prior_sha256: str | None = None
        self.prior_note: str | None = None

    def __call__(self, f, header: Header) -> ContainerWriter:
        prior = None
        if self.coder in ("auto", "ctx"):
            prior = _fitting_prior(self.choice, header)
            if self.choice in (None, "auto") and prior.model_id == GENERIC_PRIOR_ID:
                self.prior_note = (
                    f"no CTX prior was made for {header.model_id} weights "
                    f"{header.weights_sha256.hex()[:12]} (none shipped, none in "
                    f"$TOKPACK_PRIOR_PATH): coding with the generic prior, which saves less "
                    f"than the figures in docs/ENTROPY.md; `tokpack train-prior` makes one")
        writer = ContainerWriter(f, header, coder=self.coder, prior=prior, live=self.live,
                                 keyframe=keyframe_chunks(header, self.keyframe))
        if writer.header.prior_sha256 is not None:
            self.prior_sha256 = writer.header.prior_sha256.hex()
        return writer


def _fitting_prior(choice, header: Header):
    """The prior ``choice`` names for tokens like ``header``'s; UsageError if it cannot code
    them. The default (None, "auto") is the prior made for the weights, else the generic
    prior of the header's codebooks; "uniform" gives None (the built-in uniform prior)."""
    from tokpack.codec.priors import choose_prior
    from tokpack.formats.prior import Prior, generic_prior

    if choice in (None, "auto", "generic"):
        found = None if choice == "generic" else choose_prior(
            choice, header.model_id, header.weights_sha256)
        return found or generic_prior(header.codebook_size, header.n_codebooks)
    prior = choice if isinstance(choice, Prior) else choose_prior(
        choice, header.model_id, header.weights_sha256)
    if prior is None:
        return None
    if prior.model_id != header.model_id:
        raise UsageError(f"the prior {choice} was trained for {prior.model_id}, "
                         f"not {header.model_id}")
    if prior.codebook_size != header.codebook_size or prior.n_codebooks < header.n_codebooks:
        raise UsageError(f"the prior {choice} has {prior.n_codebooks} codebook(s) of "
                         f"{prior.codebook_size} codes; {header.n_codebooks} of "
                         f"{header.codebook_size} are needed")
    return prior


def _writer_factory(container: str, coder: str, channels: str, spec: ModelSpec, lm_weights,
                    prior=None, keyframe: float | None = None):
    """``new_writer(f, header)`` for ``container``; fails before any work is done (an
    option .ecdc cannot take, an LM that cannot be found). It has ``prior_sha256``."""
    if container == "tpk":
        return _TpkWriters(coder, prior, keyframe=keyframe)
    if prior not in (None, "auto"):
        raise UsageError("--prior is for .tpk containers (CTX coding)")
    if container != "ecdc":
        raise ValueError(f"container must be 'tpk' or 'ecdc', got {container!r}")
    if spec.family != "encodec":
        raise UsageError(f".ecdc is EnCodec's file format; {spec.name} tokens go in a .tpk")
    from tokpack.codecs.encodec.ecdc import check_ecdc_options

    lm = None
    if check_ecdc_options(coder=coder, channels=channels):
        from tokpack.codecs.encodec.lm import load_lm

        lm = load_lm(spec, lm_weights)
    return _EcdcWriters(lm)


class _EcdcWriters:
    """``new_writer(f, header)`` for .ecdc (bit-packed, or LM-coded with ``lm``)."""

    prior_sha256 = None  # .ecdc has no CTX
    prior_note = None

    def __init__(self, lm) -> None:
        self.lm = lm

    def __call__(self, f, header: Header):
        from tokpack.codecs.encodec.ecdc import EcdcWriter

        return EcdcWriter(f, header, lm=self.lm)


def _check_new(dst: Src, overwrite: bool) -> None:
    """OutputError if ``dst`` is a path that exists and may not be overwritten."""
    if not overwrite and isinstance(dst, (str, os.PathLike)) and os.path.lexists(dst):
        raise OutputError("already exists (overwrite=True replaces it)", path=os.fsdecode(dst))


def _encode_into(dst: Src, reader: audio_io.AudioReader, header: Header,
                 loaded: LoadedModel, n_q: int, new_writer, overwrite: bool,
                 progress=None) -> tuple[int, int]:
    """Stream ``reader`` through the model into a container; (token frames, bytes)."""

    def run(f: BinaryIO) -> tuple[int, int]:
        with new_writer(f, header) as w:
            pipe = _EncodePipeline(loaded, n_q, header.channel_mode, header.n_streams,
                                   header.source_sample_rate)
            frames = 0
            for block in reader.blocks():
                frames += write_blocks(w, pipe.feed(block))
                release_memory()  # see _releasing
                if progress is not None:
                    progress(reader.frames_read / header.source_sample_rate)
            frames += write_blocks(w, pipe.finish())
            if reader.frames_read != header.source_frames:
                raise _LengthChanged(reader.frames_read)  # before END: nothing valid is left
        return frames, w.bytes_written

    if isinstance(dst, (str, os.PathLike)):
        with atomic_write(dst, overwrite=overwrite) as f:
            return run(f)
    return run(dst)


def _tell(f) -> int | None:
    try:
        return f.tell() if f.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _rewind(dst: Src, start: int | None) -> bool:
    """Make ``dst`` ready to be written again from scratch; False if it cannot be."""
    if isinstance(dst, (str, os.PathLike)):
        return True  # atomic_write removed the temporary file; a new one is made
    if start is None:
        return False
    try:
        dst.seek(start)
        dst.truncate()
    except (AttributeError, OSError, ValueError):
        return False
    return True


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
    for name, value in expected.items():
        if getattr(header, name) != value:
            raise FormatError(f"{getattr(header, name)} does not match model {spec.name} "
                              f"(expected {value})", field=name)
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


def _live_lengths(reader: ChunkSource) -> bool:
    """Whether the reader learns the lengths from a LAST chunk before the last audio (a
    live container with lengths unknown in its header; FORMAT.md "Live containers")."""
    return bool(getattr(reader, "live", False)) and reader.header.model_samples is None


def iter_model_rate(reader: ChunkSource, loaded: LoadedModel, *,
                    live: bool = False) -> Iterator[np.ndarray]:
    """The decoded signal at the model rate, chunk by chunk: float32 [S, C, n] pieces.

    The pieces add up to exactly ``model_samples`` (the decoded tail past it is cut; a
    valid container never claims more samples than its frames stand for). When the header
    leaves the lengths to END (a container written to a pipe), the pieces are held
    until END says how long the signal is, unless the container was written live: then
    every piece goes out at once, and the LAST chunk gives the length before the piece
    that ends the signal. Chunks missing from ``reader`` (a SalvageReader's gaps) are
    silence over their span: the decoder stream ends before the gap and a new one starts
    after it. ``live``: the model's live decoder (a causal model's frames as they come).
    """
    header = reader.header
    shape = (header.n_streams, header.model_channels)
    limit = header.model_samples
    held: list[np.ndarray] = []
    done = 0
    for y in _decoded(reader, loaded, live=live):
        if _live_lengths(reader):  # known once the LIVE chunk was read
            limit = None if reader.last is None else reader.last[1]
            if limit is None:
                done += y.shape[2]
                yield y
                continue
        if limit is None:
            held.append(y)
            continue
        y = y[:, :, :max(limit - done, 0)]
        done += y.shape[2]
        if y.shape[2]:
            yield y
    n = reader.trailer.model_samples
    while held:  # the pieces held for want of a length, cut now that END gave it
        y = held.pop(0)[:, :, :max(n - done, 0)]
        done += y.shape[2]
        if y.shape[2]:
            yield y
    if done < n:  # lost chunks at the end (salvage), or the last frame's few samples short
        yield from _silence(shape, n - done)


_BLOCK_VALUES = 1 << 20  # float32 values per block of decoded audio or silence: 4 MiB


def _silence(shape: tuple[int, ...], n: int) -> Iterator[np.ndarray]:
    """``n`` samples of silence [*shape, n] in blocks of at most 4 MiB, however long."""
    step = max(1, _BLOCK_VALUES // max(1, int(np.prod(shape))))
    for start in range(0, n, step):
        yield np.zeros((*shape, min(step, n - start)), np.float32)


def _decoded(reader: ChunkSource, loaded: LoadedModel, *, live: bool = False
             ) -> Iterator[np.ndarray]:
    """Non-empty float32 [S, C, n] pieces of the signal from its first sample, untrimmed;
    lost chunks are silence from the start of the first lost one to the next intact one."""
    import torch

    header = reader.header
    shape = (header.n_streams, header.model_channels)

    def start():
        return [loaded.stream_decoder(live=live) for _ in range(shape[0])]

    def feed(decoders, chunk):
        if header.segmented:
            bounds = np.concatenate([[0], np.cumsum(chunk.segment_frames)])
            return [dec.feed([(chunk.tokens[s, :, a:b], float(scales[s]))
                              for a, b, scales in zip(bounds[:-1], bounds[1:], chunk.scales)])
                    for s, dec in enumerate(decoders)]
        return [dec.feed(chunk.tokens[s]) for s, dec in enumerate(decoders)]

    def cut(parts, end: int | None = None) -> np.ndarray:  # [S, C, n], stopped at sample `end`
        y = torch.stack(parts).cpu().numpy()
        return y if end is None else y[:, :, :max(end - at, 0)]

    at = expected = 0  # samples produced; the chunk that comes next unless some are lost
    decoders = start()
    for chunk in reader:
        if chunk.index != expected:  # chunks lost: end this stream where they start
            y = cut([dec.finish() for dec in decoders], chunk_sample(header, expected))
            resume = chunk_sample(header, chunk.index)
            if y.shape[2]:
                yield y
            yield from _silence(shape, resume - at - y.shape[2])
            at = resume
            decoders = start()
        y = cut(feed(decoders, chunk))
        expected = chunk.index + 1
        if y.shape[2]:
            at += y.shape[2]
            yield y
    lost_at_end = reader.trailer.n_chunks > expected
    y = cut([dec.finish() for dec in decoders], chunk_sample(header, expected) if lost_at_end else None)
    if y.shape[2]:
        yield y


def iter_pcm(reader: ChunkSource, loaded: LoadedModel, out_rate: int, *,
             restore: bool = True, live: bool = False) -> Iterator[np.ndarray]:
    """Decoded audio blocks float32 [n, channels] at ``out_rate``, in the source's layout
    (``restore``) or the model's; exactly ``ceil(source_frames * out_rate / source_rate)``
    frames in all. ``live``: the model and the resampler run live (each block as soon as
    its tokens are in)."""
    import torch

    from tokpack.codec.resampler import SincResampler

    header = reader.header
    model_rate = header.model_sample_rate
    resampler = None
    want = None
    done = 0

    def fit(x: torch.Tensor):  # [ch, n] -> [n, ch], never past `want`
        nonlocal done
        keep = x.shape[-1] if want is None else max(min(x.shape[-1], want - done), 0)
        done += keep
        return np.ascontiguousarray(x[:, :keep].numpy().T) if keep else None

    def target() -> int | None:  # known once the model-rate data came (live: once LAST did)
        n = _source_frames(reader)
        if n is None and _live_lengths(reader) and reader.last is not None:
            n = reader.last[0]
        return None if n is None else audio_io.resampled_length(n, header.source_sample_rate,
                                                                 out_rate)

    channels = _out_channels(header, restore)
    # model-rate samples per step, so that a step's output (channels x the rate ratio) stays
    # within a block however many channels the source had (up to 1024 at 768 kHz)
    step = max(1, _BLOCK_VALUES // (channels * -(-out_rate // model_rate)))
    for piece in iter_model_rate(reader, loaded, live=live):
        if want is None:
            want = target()
        for start in range(0, piece.shape[2], step):
            y = piece[:, :, start : start + step]
            pcm = from_streams(y, header.channel_mode, header.source_channels, restore=restore)
            if resampler is None:
                resampler = SincResampler(model_rate, out_rate, pcm.shape[1], live=live)
            block = fit(resampler.process(torch.from_numpy(np.ascontiguousarray(pcm.T))))
            if block is not None:
                yield block
    if want is None:
        want = target()
    if resampler is not None:
        block = fit(resampler.finish())
        if block is not None:
            yield block
    if done < want:
        yield from (np.ascontiguousarray(x.T) for x in _silence((channels,), want - done))


def _releasing(blocks: Iterator[np.ndarray], progress=None, rate: int = 1) -> Iterator[np.ndarray]:
    """``blocks``, giving the heap's free pages back to the system after each one (and
    telling ``progress`` the seconds, at ``rate``, passed on so far).

    Streaming allocates and frees pieces of a few MB in several threads; glibc's heaps
    fragment and keep the freed memory, so the resident size creeps up with the length
    (measured: +40 MB from 1 to 10 minutes of audio, 100 MB free in the heap after an
    encode). ``malloc_trim`` between blocks (each ~10 s of audio) costs microseconds.
    """
    done = 0
    for block in blocks:
        yield block
        release_memory()
        done += block.shape[0]
        if progress is not None:
            progress(done / rate)


def _source_frames(reader: ChunkSource) -> int | None:
    """The source's frame count: END's once read (a SalvageReader's at once: up to its last
    chunk when the file was cut short), else the header's (None if only END has it)."""
    trailer = reader.trailer
    return reader.header.source_frames if trailer is None else trailer.source_frames


def _out_channels(header: Header, restore: bool) -> int:
    shape = (header.n_streams, header.model_channels, 0)
    return from_streams(np.zeros(shape, np.float32), header.channel_mode,
                        header.source_channels, restore=restore).shape[1]


def decode(src: Src, dst: Src, *, sample_rate="original", subtype: str = "PCM_16",
           format: str | None = None, weights=None, force_weights: bool = False,
           device: str = "cpu", threads: int | None = None, channels: str = "original",
           model: LoadedModel | None = None, salvage: bool = False,
           lm_weights=None, priors=(), overwrite: bool = False,
           progress: Callable[[float], None] | None = None, live: bool = False) -> DecodeResult:
    """Decode a container (path or binary file object) to WAV/FLAC (or RAW) at ``dst``.

    ``sample_rate``: "original" (default), "model", or Hz. ``channels``: "original"
    restores the source's channel count, "model" keeps the model's (one per stream when
    split). ``model``: a LoadedModel to reuse (used if its name matches the container).
    WeightsMismatch when the container was made with other weights, unless
    ``force_weights``. The container is decoded and written chunk by chunk; to a pipe,
    a WAV streams when the header knows the length (else it is built in a temporary
    file first).

    ``salvage``: decode what is intact of a damaged or cut-short container instead of
    failing (formats.salvage; the file is read whole): lost chunks become silence over
    their span, the length is kept (a file cut short ends after its last chunk), and
    ``lost`` in the result says what is missing. FormatError if no chunk is intact.

    ``src`` may also be EnCodec's .ecdc file (told by its magic; codecs.encodec.ecdc): it decodes
    at the model's rate and channels to its recorded length ("original" is the model's);
    it records no weights, so none are checked. An LM-coded one needs the model's LM
    (``lm_weights`` or the usual search).

    ``priors``: .tpp files (or Priors) that may hold the CTX prior the container names;
    $TOKPACK_PRIOR_PATH and the shipped priors are searched too (PriorNotFound if absent).

    A ``dst`` path is written atomically, and only if it does not exist unless
    ``overwrite`` (OutputError, before any work). ``progress(seconds)`` is called after
    each block written with the seconds of audio written so far.

    ``live`` (causal models): each chunk's audio is computed and written (and flushed) as
    soon as the chunk arrives; a WAV to a pipe then says its length is unknown. The
    output length stays exact for a live container (FORMAT.md "Live containers"); one
    written otherwise to a pipe is still held until END gives its length.
    """
    _check_new(dst, overwrite)
    if channels not in ("original", "model"):
        raise ValueError(f"channels must be 'original' or 'model', got {channels!r}")
    t0 = time.perf_counter()
    release_memory()  # what an earlier call left free in the heap (see _releasing)
    label = _label(src)
    owned = isinstance(src, (str, os.PathLike))
    f = open(src, "rb") if owned else src
    counter = CountingReader(f)
    try:
        import torch

        reader = open_tokens(counter, label, salvage=salvage, lm_weights=lm_weights,
                             priors=priors)
        ecdc = not isinstance(reader, (ContainerReader, SalvageReader))
        with torch_threads(threads), torch.inference_mode():
            header = reader.header
            spec = get_spec(header.model_id)
            check_header_fits(header, spec)
            if live:
                from tokpack.codec.registry import check_live

                check_live(spec)
            if salvage and reader.lost and not reader.intact:
                more = f" (and {len(reader.lost) - 1} more)" if len(reader.lost) > 1 else ""
                raise FormatError(f"nothing to salvage: {reader.lost[0].describe()}{more}")
            out_rate = _out_rate(sample_rate, header)
            audio_io.check_output(dst, subtype, format)  # before the model is loaded
            if model is not None and model.spec.name == spec.name:
                loaded = model
            else:
                loaded = _loaded(spec.name, weights=weights, device=device)
            match = ecdc or check_weights(header, loaded, force_weights)
            restore = channels == "original"
            known = _source_frames(reader)
            frames = None
            if known is not None:
                frames = audio_io.resampled_length(known, header.source_sample_rate, out_rate)
            written = audio_io.write_audio_blocks(
                dst, _releasing(iter_pcm(reader, loaded, out_rate, restore=restore, live=live),
                                progress, out_rate), out_rate,
                _out_channels(header, restore), frames=frames, subtype=subtype,
                format=format, overwrite=overwrite, live=live)
            source_frames = reader.trailer.source_frames
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
        weights_sha256="" if ecdc else header.weights_sha256.hex(),
        weights_match=match,
        sample_rate=out_rate,
        channels=written.channels,
        frames=written.frames,
        clipped_samples=written.clipped_samples,
        subtype=written.subtype,
        format=written.format,
        lost=reader.lost if salvage else None,
        prior_sha256=None if header.prior_sha256 is None else header.prior_sha256.hex(),
        notes=list(reader.notes) if salvage else [],
    )
