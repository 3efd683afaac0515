"""The work done per group of inputs, in a worker process or a Ray actor: audio files ->
rows (the container bytes and what they hold). Picklable, module level; imports torch
only when it encodes."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from tokpack.batch import EncodeOptions, Fatal, Job, JobResult, _guarded, _loaded_model, _opens
from tokpack.formats import read_header

#: inputs longer than this are encoded alone, streamed, whatever --batch says: a batch
#: holds its inputs' audio in memory whole
BATCH_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class WorkOptions:
    encode: EncodeOptions
    batch: int = 1  # inputs per forward pass


def encode_group(options: WorkOptions, items: list[tuple[str, str]]) -> list[dict]:
    """[(key, source), ...] -> their rows, in the same order.

    A failing input is a ``failed`` row; only what fails every input alike (the model
    cannot be loaded) raises, as :class:`~tokpack.batch.Fatal`."""
    if options.batch > 1 and len(items) > 1:
        return _encode_batched(options, items)
    return [encode_one(options.encode, key, source) for key, source in items]


def encode_one(options: EncodeOptions, key: str, source: str) -> dict:
    buffer = io.BytesIO()

    def run() -> JobResult:
        from tokpack.codec.engine import encode

        src = Path(source)
        model = (_loaded_model(options.model, options.weights, options.device)
                 if _opens(src) else options.model)  # an unreadable file fails as such first
        r = encode(src, buffer, model=model, bandwidth=options.bandwidth,
                   weights=options.weights, device=options.device, threads=options.threads,
                   channels=options.channels, coder=options.coder, prior=options.prior)
        lengths.append((r.token_frames, r.source_frames))
        return JobResult(source, None, "ok")

    lengths: list[tuple[int, int]] = []  # token frames, source frames
    result = _guarded(Job(source, None), False, run)
    if result.status != "ok":
        return failed_row(key, source, result.error)
    data = buffer.getvalue()
    return ok_row(key, source, data, read_header(io.BytesIO(data)), *lengths[0])


def _encode_batched(options: WorkOptions, items: list[tuple[str, str]]) -> list[dict]:
    """Inputs read whole and encoded ``options.batch`` per forward pass (codec.engine
    .encode_arrays); long ones alone, streamed."""
    import torch

    from tokpack.codec.audio import read_audio
    from tokpack.codec.engine import encode_arrays
    from tokpack.codec.threads import torch_threads

    opts = options.encode
    rows: dict[int, dict] = {}
    audio: dict[int, tuple] = {}
    for i, (key, source) in enumerate(items):
        def read(i=i, source=source) -> JobResult:
            samples, info = read_audio(Path(source))
            audio[i] = (samples, info.sample_rate)
            return JobResult(source, None, "ok")

        seconds = _duration(source)
        if seconds is not None and seconds > BATCH_MAX_SECONDS:
            rows[i] = encode_one(opts, key, source)
            continue
        result = _guarded(Job(source, None), False, read)
        if result.status != "ok":
            rows[i] = failed_row(key, source, result.error)
    if audio:
        loaded = _loaded_model(opts.model, opts.weights, opts.device)
        order = sorted(audio)
        with torch_threads(opts.threads), torch.inference_mode():
            encoded = encode_arrays([audio[i] for i in order], loaded, opts.bandwidth,
                                    channels=opts.channels, batch=options.batch)
        for i, enc in zip(order, encoded):
            key, source = items[i]

            def pack(i=i, key=key, source=source, enc=enc) -> JobResult:
                data = enc.to_bytes(coder=opts.coder, prior=opts.prior)
                rows[i] = ok_row(key, source, data, enc.header, enc.tokens.shape[2],
                                 enc.header.source_frames)
                return JobResult(source, None, "ok")

            result = _guarded(Job(source, None), False, pack)
            if result.status != "ok":
                rows[i] = failed_row(key, source, result.error)
    return [rows[i] for i in range(len(items))]


def _duration(source: str) -> float | None:
    import soundfile

    try:
        return float(soundfile.info(source).duration)
    except (RuntimeError, OSError, TypeError):
        return None  # fails as such when read


def ok_row(key: str, source: str, data: bytes, h, n_frames: int, source_frames: int) -> dict:
    """The row of container ``data``: what it holds, from its header ``h`` and the
    lengths the encoder reported (token frames, source frames); decoding the container
    again to count them would cost more than the model does on a GPU."""
    return {
        "key": key, "source": source, "status": "ok", "error": None, "tpk": data,
        "model": h.model_id, "n_codebooks": h.n_codebooks, "n_streams": h.n_streams,
        "codebook_size": h.codebook_size, "frame_rate": h.model_sample_rate / h.hop_length,
        "n_frames": int(n_frames), "duration_s": source_frames / h.source_sample_rate,
        "sample_rate": h.source_sample_rate, "channels": h.source_channels, "bytes": len(data),
    }


def failed_row(key: str, source: str, error: str | None) -> dict:
    row = dict.fromkeys(("tpk", "model", "n_codebooks", "n_streams", "codebook_size",
                         "frame_rate", "n_frames", "duration_s", "sample_rate", "channels",
                         "bytes"))
    row.update(key=key, source=source, status="failed", error=error or "failed")
    return row


class RayEncoder:
    """A Ray Data actor: the model loaded once, batches of rows ``key``/``source`` in,
    rows of the shard schema out (a pyarrow table). What cannot load is a ``fatal`` row,
    for the driver to say once (Ray's own errors would wrap it in a traceback)."""

    def __init__(self, options: WorkOptions) -> None:
        self.options = options
        self.fatal: Fatal | None = None
        if options.encode.threads is not None:
            import torch

            torch.set_num_threads(options.encode.threads)
        try:
            _loaded_model(options.encode.model, options.encode.weights, options.encode.device)
        except Fatal as exc:
            self.fatal = exc

    def __call__(self, batch):
        import pyarrow as pa

        from tokpack.dataset.shards import arrow_schema

        items = list(zip(batch["key"].to_pylist(), batch["source"].to_pylist()))
        if self.fatal is not None:
            rows = [dict(failed_row(k, s, self.fatal.message), status="fatal", source=self.fatal.path or s)
                    for k, s in items]
        else:
            rows = encode_group(self.options, items)
        return pa.Table.from_pylist(rows, schema=arrow_schema())


def ray_encoder(options: WorkOptions) -> type:
    """:class:`RayEncoder` with ``options`` built in: Ray ships a class with the actor's
    definition, where constructor arguments would go through its object store (and make
    a restarted actor depend on them)."""

    class Encoder(RayEncoder):
        def __init__(self) -> None:
            super().__init__(options)

    return Encoder
