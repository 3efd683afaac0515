"""``encode_dataset``: a corpus -> Parquet or WebDataset shards, on worker processes here
or on Ray Data, resumable.

The driver (this process) plans the inputs, skips what the output folder already holds
``ok``, sends the rest to the engine in groups, and writes the rows that come back, in
input order, into shards of bounded rows and bytes. Rows are small (the containers:
~45 kB per minute of audio at 6 kbps); the audio itself is read where it is encoded, in
the workers or actors, never sent through the driver or Ray's object store.

Resuming: the shards are the record of what is done. A rerun on the same folder reads
their keys and statuses, encodes only the inputs not ``ok`` there (new ones, failed ones,
those a killed run did not finish), and drops the failed rows that new rows supersede,
so that every key is in one row. One run at a time may write a folder (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tokpack import __version__
from tokpack._io import atomic_write
from tokpack.batch import EncodeOptions, Fatal
from tokpack.dataset import shards as sh
from tokpack.dataset.inputs import Item, plan_inputs
from tokpack.dataset.work import WorkOptions, encode_group
from tokpack.errors import OutputError, UsageError

SCHEMA_VERSION = 1
ENGINES = ("local", "ray")
DEFAULT_SHARD_ROWS = 1000
DEFAULT_SHARD_BYTES = 256 << 20


@dataclass
class DatasetResult:
    """What a run did (``ok``/``failed``: this run's inputs; ``already_ok``: skipped,
    done by an earlier run) and what the folder holds now (``total_*``)."""

    outdir: str
    format: str
    engine: str
    inputs: int
    ok: int = 0
    failed: int = 0
    already_ok: int = 0
    audio_seconds: float = 0.0  # of this run's ok rows
    bytes: int = 0  # their containers'
    seconds: float = 0.0  # wall time of the run
    shards_written: int = 0
    total_ok: int = 0
    total_failed: int = 0
    failures: list[dict] = field(default_factory=list)  # this run's: key, source, error

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


def encode_dataset(
    inputs: list[str],
    outdir: str | os.PathLike,
    *,
    model: str = "encodec_24khz",
    bandwidth: float | None = None,
    weights: str | None = None,
    channels: str = "auto",
    coder: str = "auto",
    prior: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    format: str = sh.PARQUET,
    engine: str = "local",
    address: str | None = None,
    jobs: int = 0,
    batch: int = 1,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    on_row: Callable[[dict], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> DatasetResult:
    """Encode ``inputs`` (audio files, folders, manifests: :mod:`.inputs`) into shards in
    ``outdir``, resuming what is there.

    ``engine``: "local" (``jobs`` worker processes here; 0: one per core, or one with a
    GPU) or "ray" (Ray Data actors, one model each; ``address`` a cluster's, else
    ``RAY_ADDRESS`` or a Ray instance started here; ``jobs`` actors, 0: as many as the
    cluster's CPUs allow at ``threads`` each, or its GPUs). ``threads``: torch threads per
    worker (default 1; containers are byte-identical only at the same count). ``batch``:
    inputs per forward pass (for GPUs). ``on_row(row)`` sees each row as it is written,
    in input order; ``on_start(n)`` is told how many inputs this run encodes. UsageError
    for options that cannot work (before any input is read), :class:`~tokpack.batch.Fatal`
    when the model cannot be loaded.
    """
    import time

    t0 = time.perf_counter()
    if format not in sh.FORMATS:
        raise UsageError(f"unknown format {format!r} (parquet or webdataset)")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r} (local or ray)")
    if shard_rows < 1 or shard_bytes < 1 or batch < 1 or jobs < 0:
        raise UsageError("--shard-size, --shard-bytes and --batch must be at least 1, -j at least 0")
    if address is not None and engine != "ray":
        raise UsageError("--address is for --engine ray")
    options = EncodeOptions(model=model, bandwidth=bandwidth, weights=weights, channels=channels,
                            coder=coder, prior=prior, device=device,
                            threads=1 if threads is None else threads)
    # a Ray cluster's workers may have the GPUs this process lacks: checked against it
    if engine == "ray":
        replace(options, device="cpu").check()
    else:
        options.check()
    if engine == "local" and device == "auto":
        from tokpack.codec.weights import resolve_device

        options = replace(options, device=resolve_device(device))
    if engine == "ray":
        _needs("ray.data", "--engine ray needs Ray Data: pip install 'tokpack[ray]'")
    if format == sh.PARQUET:
        _needs("pyarrow", "Parquet shards need pyarrow: pip install 'tokpack[dataset]'")
    items = plan_inputs(inputs)
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder: {exc.strerror}", path=str(out)) from None
    settings = _settings(options, format)
    with _locked(out):
        sh.remove_temporaries(out)
        state = _State.read(out, format, settings)
        state.drop_superseded()
        todo = [item for item in items if state.status.get(item.key) != "ok"]
        result = DatasetResult(str(out), format, engine, len(items),
                               already_ok=len(items) - len(todo))
        sink = _Sink(out, format, state, shard_rows, shard_bytes,
                     sh.webdataset_keys([i.key for i in items]) if format == sh.WEBDATASET else {})
        state.write_manifest()  # the options, before any shard: a shard never lacks them
        if on_start is not None:
            on_start(len(todo))
        work = WorkOptions(options, batch)
        rows = (_ray_rows if engine == "ray" else _local_rows)(work, todo, jobs=jobs, address=address)
        with contextlib.closing(rows):  # however this ends, the workers or Ray stop now
            for row in rows:
                if row["status"] == "fatal":
                    raise Fatal(row["error"], row["source"])
                sink.add(row)
                if row["status"] == "ok":
                    result.ok += 1
                    result.audio_seconds += row["duration_s"]
                    result.bytes += row["bytes"]
                else:
                    result.failed += 1
                    result.failures.append({k: row[k] for k in ("key", "source", "error")})
                if on_row is not None:
                    on_row(row)
        sink.close()
        state.drop_superseded()
        state.write_manifest()
    result.shards_written = sink.written
    result.total_ok = state.ok
    result.total_failed = len(state.failures)
    result.seconds = time.perf_counter() - t0
    return result


def _settings(options: EncodeOptions, fmt: str) -> dict:
    """What makes rows of one folder alike: a rerun must ask for the same."""
    bandwidth = None if options.bandwidth is None else float(options.bandwidth)
    return {"format": fmt, "model": options.model, "bandwidth": bandwidth,
            "weights": options.weights, "channels": options.channels, "entropy": options.coder,
            "prior": options.prior}


def _needs(module: str, message: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module.partition(".")[0]) is None:
        raise UsageError(message)


class _locked:
    """One run at a time writes a folder: an exclusive lock on OUTDIR/.tokpack.lock (held
    until this process ends, however it ends)."""

    def __init__(self, out: Path) -> None:
        self.path = out / sh.LOCK

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise OutputError("another tokpack run is writing this folder",
                              path=str(self.path.parent)) from None
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


class _State:
    """What the folder holds: each key's status and shard, the failures, the manifest."""

    def __init__(self, out: Path, fmt: str, settings: dict) -> None:
        self.out, self.fmt, self.settings = out, fmt, settings
        self.status: dict[str, str] = {}
        self.ok = 0  # keys whose status is ok
        self.where: dict[str, list[sh.Entry]] = {}
        self.failures: dict[str, dict] = {}  # key -> {key, source, error}
        self.shards: set[Path] = set()

    @classmethod
    def read(cls, out: Path, fmt: str, settings: dict) -> _State:
        state = cls(out, fmt, settings)
        manifest = out / sh.MANIFEST
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise OutputError(f"unreadable {sh.MANIFEST}: {exc}", path=str(out)) from None
            if old.get("settings") != settings:
                diff = ", ".join(f"{k} {old.get('settings', {}).get(k)!r} (asked: {v!r})"
                                 for k, v in settings.items()
                                 if old.get("settings", {}).get(k) != v)
                raise UsageError(f"{out} holds a dataset made with other options: {diff}; "
                                 "use another folder")
            state.failures = {f["key"]: f for f in old.get("failures", [])}
        else:
            other = next((f for f in sh.FORMATS if f != fmt and sh.list_shards(out, f)), None)
            if other is not None:
                raise UsageError(f"{out} holds {other} shards; use another folder")
        for path in sh.list_shards(out, fmt):
            state._add(sh.shard_entries(path))
        return state

    def _add(self, entries: list[sh.Entry]) -> None:
        for entry in entries:
            self.where.setdefault(entry.key, []).append(entry)
            self.shards.add(entry.shard)
            if self.status.get(entry.key) != "ok":
                self.status[entry.key] = entry.status
                self.ok += entry.status == "ok"
            if entry.status == "ok":
                self.failures.pop(entry.key, None)

    def record(self, path: Path, rows: list[dict]) -> None:
        """A shard was written: its rows are now the folder's."""
        self._add([sh.Entry(r["key"], r["status"], path) for r in rows
                   if r["status"] == "ok" or self.fmt == sh.PARQUET])
        for row in rows:
            if row["status"] != "ok":
                self.status.setdefault(row["key"], "failed")
                self.failures[row["key"]] = {k: row[k] for k in ("key", "source", "error")}

    def drop_superseded(self) -> None:
        """Keep one row per key: its ok row, else its latest failed one. Shards holding
        others are rewritten without them (atomically) or removed when emptied."""
        drop: dict[Path, set[str]] = {}
        for key, entries in self.where.items():
            if len(entries) < 2:
                continue
            ok = [e for e in entries if e.status == "ok"]
            keep = ok[0] if ok else max(entries, key=lambda e: e.shard.name)
            for e in entries:
                if e is not keep:
                    drop.setdefault(e.shard, set()).add(key)
            self.where[key] = [keep]
        for path, keys in drop.items():
            sh.rewrite_without(path, keys)
            if not path.exists():
                self.shards.discard(path)

    def write_manifest(self) -> None:
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "tokpack_version": __version__,
            "settings": self.settings,
            "counts": {"ok": self.ok, "failed": len(self.failures), "shards": len(self.shards)},
            "shards": [p.name for p in sorted(self.shards)],
            "failures": sorted(self.failures.values(), key=lambda f: f["key"]),
        }
        with atomic_write(self.out / sh.MANIFEST) as f:
            f.write((json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


class _Sink:
    """Rows in input order -> shards of at most ``rows`` rows and about ``size`` bytes."""

    def __init__(self, out: Path, fmt: str, state: _State, rows: int, size: int,
                 wds_keys: dict[str, str]) -> None:
        self.out, self.fmt, self.state = out, fmt, state
        self.max_rows, self.max_bytes, self.wds_keys = rows, size, wds_keys
        self.generation = 1 + max((sh.generation(p) for p in sh.list_shards(out, fmt)), default=0)
        self.rows: list[dict] = []
        self.bytes = 0
        self.written = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.bytes += row["bytes"] or 0
        if len(self.rows) >= self.max_rows or self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        path = self.out / sh.shard_name(self.fmt, self.generation, self.written)
        if self.fmt == sh.PARQUET or any(r["status"] == "ok" for r in self.rows):
            sh.write_shard(path, self.fmt, self.rows, self.wds_keys)
            self.written += 1
        self.state.record(path, self.rows)
        self.state.write_manifest()
        self.rows, self.bytes = [], 0

    def close(self) -> None:
        self.flush()


# ---- engines ------------------------------------------------------------------------


def _groups(items: list[Item], size: int) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield [(i.key, i.source) for i in items[start:start + size]]


def _local_rows(work: WorkOptions, items: list[Item], *, jobs: int, address) -> Iterator[dict]:
    from functools import partial

    from tokpack.batch import imap_ordered

    if not items:
        return
    n = jobs or (1 if work.encode.device != "cpu" else max(1, (os.cpu_count() or 1) // work.encode.threads))
    n = min(n, -(-len(items) // work.batch))
    fn = partial(encode_group, work)
    if n == 1:
        results = map(fn, _groups(items, work.batch))
    else:
        # rows come back in order: a wide window keeps the workers busy past a long input
        # (the rows it holds are containers, small)
        results = imap_ordered(fn, _groups(items, work.batch), n_jobs=n, window=max(32, 4 * n))
    for rows in results:
        yield from rows


def _ray_rows(work: WorkOptions, items: list[Item], *, jobs: int, address) -> Iterator[dict]:
    import logging
    import warnings

    import ray

    from tokpack.dataset.work import ray_encoder

    if not items:
        return
    started = not ray.is_initialized()
    own = started and address is None and not os.environ.get("RAY_ADDRESS")  # a local instance
    if started:
        # Ray's chatter (start-up notes, its executor's progress) would bury ours on
        # stderr; what fails reaches us as an exception
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    try:
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # after its import configured it
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        device = work.encode.device
        if device == "auto":
            device = "cuda" if resources.get("GPU") else "cpu"
            work = replace(work, encode=replace(work.encode, device=device))
        gpu = device != "cpu"
        if gpu and not resources.get("GPU"):
            raise UsageError(f"--device {device}: the Ray cluster has no GPU")
        if jobs:
            n = jobs
        elif gpu:
            n = max(1, int(resources.get("GPU", 1)))
        else:
            n = max(1, int(resources.get("CPU", 1)) // work.encode.threads)
        n = min(n, -(-len(items) // work.batch))
        ds = ray.data.from_items([{"key": i.key, "source": i.source} for i in items])
        with warnings.catch_warnings():  # max_restarts: a "ray_remote_args", deprecated in
            warnings.simplefilter("ignore")  # 2.60 without a named replacement (hence <2.64)
            ds = ds.map_batches(ray_encoder(work), batch_size=work.batch, batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=n),
                                num_cpus=work.encode.threads, num_gpus=1 if gpu else 0,
                                # a local instance has no nodes to lose: an actor that
                                # dies ends the run (a rerun resumes), and Ray need not warn,
                                # for every actor, that a restart could not find its arguments
                                **({"max_restarts": 0} if own else {}))
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            yield from table.to_pylist()
    finally:
        if started:
            ray.shutdown()
