"""Many inputs, one job each: where outputs go, what is skipped, running jobs in parallel.

The CLI's encode/decode commands are thin wrappers over :func:`plan_jobs` and
:func:`run_jobs`. Work functions run in worker processes (``jobs > 1``), each loading a
model once and reusing it for every file it is handed.
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import multiprocessing
import os
import signal
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tokpack.errors import OutputError, TokpackError, UsageError, internal_error
from tokpack.formats.prior import prior_label

STDIO = "-"
SCHEMA_VERSION = 1

#: extensions walked for audio under -r (what libsndfile reads), and for containers
AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .aif .aiff .aifc .au .snd .caf .w64 .rf64 .mp3".split()
)
CONTAINER_SUFFIXES = frozenset({".tpk", ".ecdc"})  # .ecdc: EnCodec's own files
#: decode's default output: x.tpk -> x.out.wav, never the audio x.tpk was made from
DECODED_SUFFIX = ".out.wav"


@dataclass(frozen=True)
class Job:
    """One input and where its output goes (``dest`` None: stdout; ``test``: no output).

    ``alone``: the only input, named on its own (not found in a directory): an output in
    its way is an error, as for zstd and flac, where a batch skips it."""

    source: str
    dest: Path | None
    alone: bool = False


@dataclass
class JobResult:
    path: str
    output: str | None
    status: str  # "ok" | "skipped" | "failed"
    error: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    duration_s: float | None = None
    bitrate_bps: float | None = None
    seconds: float = 0.0
    warning: str | None = None
    lost: list[dict] | None = None  # decode --salvage: formats.salvage.LostRange fields
    doubts: list[str] | None = None  # decode --salvage: where the input's END was not believed
    prior: str | None = None  # the CTX prior the container names: hex, "uniform", "generic", or None
    prior_gain: float | None = None  # encode -v: what a trained prior would save (engine.encode)
    note: str | None = None  # said once per batch at -v (not in the JSON)

    def to_json(self) -> dict:
        fields = asdict(self)
        del fields["note"]
        return {"schema_version": SCHEMA_VERSION, **fields}


def _walk(root: Path, suffixes: frozenset[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                yield Path(dirpath) / name


def plan_jobs(
    inputs: Iterable[str],
    *,
    suffix: str,
    walk_suffixes: frozenset[str],
    recursive: bool = False,
    output: str | None = None,
    output_dir: str | None = None,
    stdout: bool = False,
    test: bool = False,
) -> list[Job]:
    """Expand directories (with ``recursive``) and assign every input its output path.

    Without ``output_dir`` an output goes beside its input with ``suffix``; with it, the
    input's path relative to the directory it was found under is mirrored below
    ``output_dir``. ``output`` ('-' = stdout) and ``stdout`` need exactly one input.
    """
    inputs = list(inputs)
    if not inputs:
        raise UsageError("no input files")
    if stdout and output not in (None, STDIO):
        raise UsageError("-c/--stdout and -o FILE are mutually exclusive")
    if output is not None and output_dir is not None:
        raise UsageError("-o FILE and --output-dir are mutually exclusive")
    to_stdout = stdout or output == STDIO
    if test and (output is not None or output_dir is not None or stdout):
        raise UsageError("-t/--test writes nothing: it takes no -o, -c or --output-dir")

    found: list[tuple[str, Path | None]] = []  # (input, path relative to its root)
    for name in inputs:
        if name == STDIO:
            found.append((STDIO, None))
            continue
        path = Path(name)
        if path.is_dir():
            if not recursive:
                raise UsageError(f"{name} is a directory (use -r to descend into it)")
            found.extend((str(p), p.relative_to(path)) for p in _walk(path, walk_suffixes))
        else:
            found.append((name, Path(path.name)))
    derived = not (test or to_stdout or output is not None or output_dir is not None)
    for name, _ in found:
        if derived and name != STDIO and (not _regular(name) or _in_system_tree(Path(name).parent)):
            raise UsageError(f"{name} is not a regular file: give -o FILE or -c to write to stdout")
    if (output is not None or to_stdout) and len(found) != 1:
        raise UsageError(f"-o and -c take exactly one input, got {len(found)}")
    if sum(1 for name, _ in found if name == STDIO) > 1:
        raise UsageError("stdin ('-') can be read only once")

    alone = len(inputs) == 1 and len(found) == 1 and found[0][0] == inputs[0]
    jobs = []
    for name, rel in found:
        if test:
            dest = None
        elif to_stdout:
            dest = None
        elif output is not None:
            dest = Path(output)
        elif name == STDIO:
            raise UsageError("reading from stdin: give -o FILE or -c to write to stdout")
        elif output_dir is not None:
            dest = Path(output_dir) / rel.with_suffix(suffix)
        else:
            dest = Path(name).with_suffix(suffix)
        jobs.append(Job(name, dest, alone))
    return _without_clashes(jobs, suffix)


def _without_clashes(jobs: list[Job], suffix: str) -> list[Job]:
    """Inputs differing only in suffix (a.flac, a.ogg) must not share an output: the first
    (in order) keeps ``a.tpk``, later ones get their whole name plus suffix (``a.ogg.tpk``)."""
    claimed: dict[Path, str] = {}
    seen: set[str] = set()
    out = []
    for job in jobs:
        if job.source in seen:
            raise UsageError(f"{job.source} is given twice")
        seen.add(job.source)
        if job.dest is not None and job.dest in claimed:
            job = Job(job.source, job.dest.with_name(Path(job.source).name + suffix), job.alone)
        if job.dest is not None:
            other = claimed.setdefault(job.dest, job.source)
            if other != job.source:
                raise UsageError(f"{other} and {job.source} would both be written to {job.dest}")
        out.append(job)
    return out


def check_destination(job: Job, *, force: bool) -> str | None:
    """None if the job may write its output; else why it is skipped. Raises for a clash,
    and for an existing output of a job that is ``alone``."""
    if job.dest is None or not _regular(job.dest):
        return None  # stdout, or a device or pipe (-o /dev/null): nothing to clobber
    if job.source != STDIO and job.dest.exists() and os.path.exists(job.source):
        if os.path.samefile(job.source, job.dest):
            raise TokpackError("input and output are the same file", path=str(job.dest))
    if job.dest.exists() and not force:
        if job.alone:
            raise TokpackError(f"{job.dest} already exists (use -f to overwrite)")
        return "already exists, skipped (use -f to overwrite)"
    return None


def default_threads(jobs: int, threads: int | None) -> int | None:
    """Torch threads per worker: ``threads`` if given, else cores divided among the jobs."""
    if threads is not None or jobs <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // jobs)


def resolve_jobs(jobs: int, n_files: int) -> int:
    """-j N: N workers; 0 means one per core; never more than there are files."""
    n = (os.cpu_count() or 1) if jobs == 0 else jobs
    return max(1, min(n, n_files))


class Terminated(BaseException):
    """Raised in the main process on SIGTERM so cleanups run as on Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _worker_init(parent: int) -> None:
    # Workers leave Ctrl-C to the parent, which cancels them; SIGTERM ends them cleanly
    # (their atomic writes remove temporaries while unwinding).
    global _PARENT
    _PARENT = parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_as_interrupt)
    _die_with_parent(parent)


_PARENT: int | None = None  # a worker's parent process


def _die_with_parent(parent: int) -> None:
    """SIGTERM this worker when ``parent`` dies, even by SIGKILL: at once on Linux
    (PR_SET_PDEATHSIG), within a second anywhere (a thread watching the parent's pid), and
    at once if it died while this worker was starting."""
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watcher below still holds

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="tokpack-parent-watch", daemon=True).start()


def _raise_as_interrupt(signum, frame):
    # Unwind (atomic writes remove their temporaries), then end for sure: the pool's worker
    # loop catches what a job raises, even KeyboardInterrupt, and would wait for more work.
    import threading

    if _PARENT is not None and os.getppid() != _PARENT:
        sys.stderr = open(os.devnull, "w")  # orphaned: no one to tell, no traceback on a terminal
    threading.Timer(_EXIT_GRACE_S, os._exit, (128 + signum,)).start()
    raise KeyboardInterrupt


_EXIT_GRACE_S = 2.0  # a terminated worker's time to clean up before it exits regardless


def run_jobs(
    jobs: list[Job],
    work: Callable[[Job], JobResult],
    *,
    n_jobs: int = 1,
    on_result: Callable[[JobResult], None] = lambda r: None,
) -> list[JobResult]:
    """Run ``work`` on every job, ``n_jobs`` at a time in worker processes (1: in-process).

    ``work`` must be a picklable module-level callable returning a JobResult (it catches
    its own expected errors). Results reach ``on_result`` as they complete; the list is
    returned in job order. SIGTERM in the main process raises :class:`Terminated`, which
    unwinds (removing temporaries) like Ctrl-C's KeyboardInterrupt.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if n_jobs <= 1:
            results = []
            for job in jobs:
                results.append(work(job))
                on_result(results[-1])
            return results
        with _pool(n_jobs) as pool:
            futures = {pool.submit(work, job): i for i, job in enumerate(jobs)}
            results: list[JobResult | None] = [None] * len(jobs)
            try:
                for future in cf.as_completed(futures):
                    result = future.result()
                    results[futures[future]] = result
                    on_result(result)
            except BaseException:
                _stop(pool, futures)
                raise
            return results  # type: ignore[return-value]
    finally:
        signal.signal(signal.SIGTERM, previous)


def imap_ordered(work: Callable, units: Iterable, *, n_jobs: int, window: int | None = None) -> Iterator:
    """``work(unit)`` for every unit, in worker processes, yielded in the units' order.

    At most ``window`` units (default: twice ``n_jobs``) are in flight or done but not yet
    yielded, so memory holds a few results however many units there are. Workers are as
    :func:`run_jobs`'s: ``work`` is picklable; Ctrl-C and SIGTERM (:class:`Terminated`)
    stop them, and they end when this process dies.
    """
    import collections

    window = window or 2 * n_jobs
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with _pool(n_jobs) as pool:
            pending: collections.deque = collections.deque()
            try:
                for unit in units:
                    pending.append(pool.submit(work, unit))
                    if len(pending) >= window:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            except BaseException:
                _stop(pool, pending)
                raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pool(n_jobs: int) -> cf.ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_worker_init,
                                  initargs=(os.getpid(),))


def _stop(pool: cf.ProcessPoolExecutor, futures: Iterable[cf.Future]) -> None:
    """Cancel what has not started and end the workers: SIGTERM, so they unwind and
    remove their temporaries."""
    for future in futures:
        future.cancel()
    for process in list(pool._processes.values()):
        process.terminate()


# ---- the work done per file -------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    model: str = "encodec_24khz"
    bandwidth: float | None = None
    weights: str | None = None
    device: str = "cpu"
    threads: int | None = None
    channels: str = "auto"
    force: bool = False
    container: str = "tpk"  # or "ecdc"
    lm_weights: str | None = None
    coder: str = "auto"  # --entropy
    prior: str | None = None  # --prior: a .tpp path, "generic", "uniform", or None for the default
    keyframe: float | None = None  # --keyframe: seconds between fresh CTX models (None: 60)
    live: bool = False  # --live: encode as the audio arrives (codec.live)
    packet_ms: float = 40.0  # --packet: audio per container chunk, live
    raw_rate: int | None = None  # --raw --raw-rate: headerless 16-bit PCM input at this rate
    raw_channels: int = 1  # --raw-channels
    estimate_prior_gain: bool = False  # -v: where the generic prior coded, estimate a trained one's gain

    def raw_format(self):
        """The PcmFormat of a --raw input, or None."""
        if self.raw_rate is None:
            return None
        from tokpack.codec.liveio import raw_format

        return raw_format(self.raw_rate, self.raw_channels)

    def check(self) -> None:
        """UsageError for an option value that cannot work, before any file is touched."""
        spec = check_model(self.model, self.bandwidth)
        if self.live:
            from tokpack.codec.live import packet_frames
            from tokpack.codec.registry import check_live

            check_live(spec)
            packet_frames(spec, self.packet_ms)
            if self.container != "tpk":
                raise UsageError("--live writes .tpk containers (.ecdc's header holds the length)")
        try:
            self.raw_format()
        except TokpackError as exc:
            raise UsageError(str(exc)) from None
        if self.keyframe is not None and not self.keyframe >= 0:
            raise UsageError(f"--keyframe must be >= 0 seconds, got {self.keyframe}")
        if self.container == "ecdc":
            from tokpack.codecs.encodec.ecdc import check_ecdc_options

            check_ecdc_options(coder=self.coder, channels=self.channels)
            if self.prior is not None:
                raise UsageError("--prior is for .tpk containers (CTX coding)")
            if self.keyframe is not None:
                raise UsageError("--keyframe is for .tpk containers (CTX coding)")
        else:
            from tokpack.codec.priors import check_tpk_options

            check_tpk_options(self.coder, self.prior)
            if self.prior not in (None, "auto", "generic", "uniform", "none"):
                prior = _prior_file("--prior", self.prior)
                if prior.model_id != spec.name:
                    raise UsageError(f"--prior {self.prior}: trained for {prior.model_id}, "
                                     f"not {spec.name}")
        if spec.extra is not None:  # the family's library is missing: say so before any work
            from tokpack.codecs import family_module

            family_module(spec.family)
        _given_file("--weights", self.weights, folder_ok=spec.family != "encodec")
        _given_file("--lm-weights", self.lm_weights)
        _check_device(self.device)


@dataclass(frozen=True)
class DecodeOptions:
    sample_rate: str | int = "original"
    subtype: str = "PCM_16"
    weights: str | None = None
    force_weights: bool = False
    device: str = "cpu"
    threads: int | None = None
    force: bool = False
    salvage: bool = False
    lm_weights: str | None = None
    priors: tuple[str, ...] = ()  # --prior: .tpp files that may hold a container's prior
    live: bool = False  # --live: each chunk's audio written as soon as it arrives
    raw: bool = False  # --raw: headerless little-endian samples out

    def check(self) -> None:
        """UsageError for an option value that cannot work, before any file is touched."""
        _given_file("--weights", self.weights, folder_ok=True)  # a Hub model's folder
        _given_file("--lm-weights", self.lm_weights)
        for path in self.priors:
            _prior_file("--prior", path)
        _check_device(self.device)


def check_model(model: str, bandwidth: float | None = None):
    """The ModelSpec of ``model``; UsageError for an unknown model or a bandwidth it lacks."""
    from tokpack.codec.registry import get_spec
    from tokpack.errors import ModelError

    try:
        spec = get_spec(model)
        if bandwidth is not None:
            spec.n_codebooks(bandwidth)
    except ModelError as exc:
        raise UsageError(exc.message) from None
    return spec


def _given_file(option: str, value: str | None, *, folder_ok: bool = False) -> None:
    """UsageError unless ``value`` names a regular file (or, ``folder_ok``, a folder:
    a Hugging Face model's, holding model.safetensors)."""
    if value is None:
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"{option} {value}: no such file")
    if not (path.is_file() or folder_ok and path.is_dir()):
        raise UsageError(f"{option} {value}: not a regular file")


def _prior_file(option: str, value: str):
    from tokpack.formats import prior as prior_files

    try:
        return prior_files.load(value)
    except (TokpackError, OSError) as exc:
        reason = exc.message if isinstance(exc, TokpackError) else (exc.strerror or str(exc))
        raise UsageError(f"{option} {value}: {reason}") from None


def _check_device(device: str) -> None:
    """cpu needs nothing (and no torch import); a GPU is asked for: torch must see one."""
    if device == "cpu":
        return
    from tokpack.codec.weights import resolve_device
    from tokpack.errors import ModelError

    try:
        resolve_device(device)
    except ModelError as exc:
        raise UsageError(exc.message) from None


def _model(name: str, weights: str | None, device: str):
    """Load each model once per process (a worker reuses it for all its files)."""
    from tokpack.codec.weights import cached_model

    return cached_model(name, weights=weights, device=device)


def _regular(name: str | Path) -> bool:
    """True for a regular file, or a name that does not exist yet."""
    try:
        return stat.S_ISREG(os.stat(name).st_mode)
    except OSError:
        return True


def _in_system_tree(folder: Path) -> bool:
    """/dev, /proc and /sys: no output of tokpack's naming ever goes there."""
    resolved = folder.resolve()
    return any(resolved == Path(top) or Path(top) in resolved.parents for top in ("/dev", "/proc", "/sys"))


def _source(job: Job, *, stream: bool = False):
    """What a job reads: stdin and named pipes are read whole (soundfile needs to seek),
    unless ``stream`` (live mode: read as it arrives); devices are refused, not read
    without end."""
    import io

    if job.source == STDIO:
        return sys.stdin.buffer if stream else io.BytesIO(sys.stdin.buffer.read())
    mode = os.stat(job.source).st_mode
    if stat.S_ISFIFO(mode):
        if stream:
            return open(job.source, "rb", buffering=0)  # noqa: SIM115 - lives as long as the job
        with open(job.source, "rb") as f:
            return io.BytesIO(f.read())
    if not stat.S_ISREG(mode):
        raise TokpackError("not a regular file or a pipe (a device?): tokpack reads files and pipes",
                           path=job.source)
    return Path(job.source)


def _target(job: Job):
    """Where a job writes: stdout; a device or pipe named by -o (/dev/null), written as a
    stream; else the path, through a temporary file."""
    if job.dest is None:
        return sys.stdout.buffer
    if not _regular(job.dest):
        return open(job.dest, "wb")  # noqa: SIM115 - lives as long as the job's process
    return job.dest


def remove_stale_temporaries(dest: Path) -> None:
    """Remove what a killed run (SIGKILL, power loss) left of its temporary for ``dest``.

    atomic_write names it ``.NAME.<random>.tmp`` beside ``dest``; this run is about to
    write ``dest`` itself, so an older temporary for it can only be debris.
    """
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def _opens(src) -> bool:
    """Whether libsndfile recognises the input file (what came through a pipe is checked
    when it is read)."""
    if not isinstance(src, Path):
        return True
    import soundfile

    try:
        soundfile.info(src)
    except (RuntimeError, OSError, TypeError):
        return False
    return True


def _guarded(job: Job, force: bool, fn) -> JobResult:
    """Skip, run or fail one job; expected errors become a failed result, not a raise."""
    t0 = time.perf_counter()
    output = None if job.dest is None else str(job.dest)
    try:
        reason = check_destination(job, force=force)
        if reason is not None:
            return JobResult(job.source, output, "skipped", error=reason)
        if job.dest is not None:
            job.dest.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(job.dest)
        result = fn()
    except BrokenPipeError:
        raise  # stdout's reader went away (| head): the CLI ends quietly, as Unix tools do
    except (TokpackError, OSError) as exc:
        if isinstance(exc, OutputError) and exc.message.startswith("already exists"):
            # another process wrote the output first (a race): as if it had been there before
            message = f"{exc.path} already exists (use -f to overwrite)"
        elif isinstance(exc, TokpackError):
            message = str(exc) if exc.path and exc.path != job.source else exc.message
        else:
            message = exc.strerror or str(exc)
            if isinstance(exc.filename, str) and exc.filename != job.source:
                message = f"{exc.filename}: {message}"
        # nothing was written: a failed job names no output
        return JobResult(job.source, None, "failed", error=message, seconds=time.perf_counter() - t0)
    except Fatal:
        raise
    except Exception as exc:  # the last resort: MemoryError, RecursionError, a bug
        if os.environ.get("TOKPACK_DEBUG", "") not in ("", "0"):
            traceback.print_exception(exc)
        return JobResult(job.source, None, "failed", error=internal_error(exc),
                         seconds=time.perf_counter() - t0)
    result.seconds = time.perf_counter() - t0
    return result


class Fatal(Exception):
    """What fails every job alike (the model cannot be loaded): raised out of the batch,
    to be said once. Plain strings, so it crosses process boundaries."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message, path)
        self.message = message
        self.path = path


def _loaded_model(name: str, weights: str | None, device: str):
    """:func:`_model`, its failure :class:`Fatal`: no later file would fare better."""
    from tokpack.errors import ModelError

    try:
        return _model(name, weights, device)
    except ModelError as exc:
        raise Fatal(exc.message, exc.path) from None


def encode_job(options: EncodeOptions, job: Job, progress=None) -> JobResult:
    from tokpack.codec.engine import encode
    from tokpack.codec.registry import get_spec
    from tokpack.codec.wavcheck import data_size_warning

    def run() -> JobResult:
        spec = get_spec(options.model)
        spec.n_codebooks(spec.default_bandwidth if options.bandwidth is None else options.bandwidth)
        if options.live:
            from tokpack.codec.live import encode_live

            r = encode_live(
                _source(job, stream=True), _target(job), model=options.model,
                bandwidth=options.bandwidth, weights=options.weights, device=options.device,
                threads=1 if options.threads is None else options.threads,
                channels=options.channels, coder=options.coder, prior=options.prior,
                packet_ms=options.packet_ms, raw=options.raw_format(), overwrite=options.force,
                keyframe=options.keyframe,
            )
            return JobResult(job.source, None if job.dest is None else str(job.dest), "ok",
                             bytes_in=r.bytes_in, bytes_out=r.bytes_out, duration_s=r.duration_s,
                             bitrate_bps=r.bitrate_bps, prior=prior_label(r.prior_sha256),
                             note=r.prior_note)
        # An unreadable file should fail as such before a model is loaded (or found missing):
        # encode() given the model's name reads the audio first.
        src = _source(job)  # a named pipe is read here, once
        raw = options.raw_format()
        model = (_loaded_model(options.model, options.weights, options.device)
                 if raw is not None or _opens(src) else options.model)
        r = encode(
            src, _target(job), model=model, bandwidth=options.bandwidth, weights=options.weights,
            device=options.device, threads=options.threads, channels=options.channels,
            container=options.container, lm_weights=options.lm_weights, coder=options.coder,
            prior=options.prior, overwrite=options.force, progress=progress, raw=raw,
            keyframe=options.keyframe, estimate_prior_gain=options.estimate_prior_gain,
        )
        return JobResult(
            job.source, None if job.dest is None else str(job.dest), "ok", bytes_in=r.bytes_in,
            bytes_out=r.bytes_out, duration_s=r.duration_s, bitrate_bps=r.bitrate_bps,
            warning=data_size_warning(job.source) if isinstance(src, Path) else None,
            prior=prior_label(r.prior_sha256), prior_gain=r.prior_gain, note=r.prior_note,
        )

    return _guarded(job, options.force, run)


def decode_job(options: DecodeOptions, job: Job, progress=None) -> JobResult:
    from tokpack.codec.engine import decode
    from tokpack.codec.tokens_io import read_model_id

    def run() -> JobResult:
        src = _source(job, stream=options.live)
        # live: the container is read as it arrives, so nothing is read ahead for its model
        model_id = None if options.live else read_model_id(src)
        r = decode(
            src, _target(job), sample_rate=options.sample_rate, subtype=options.subtype,
            force_weights=options.force_weights,
            threads=1 if options.live and options.threads is None else options.threads,
            # salvage holds the whole file while it reads it: the model comes after, not beside it
            model=None if options.salvage or model_id is None
            else _model(model_id, options.weights, options.device),
            salvage=options.salvage, weights=options.weights, device=options.device,
            lm_weights=options.lm_weights, priors=options.priors, overwrite=options.force,
            progress=progress, live=options.live, format="RAW" if options.raw else None,
        )
        result = JobResult(
            job.source, None if job.dest is None else str(job.dest), "ok", bytes_in=r.bytes_in,
            bytes_out=r.bytes_out, duration_s=r.duration_s, bitrate_bps=r.bitrate_bps,
            lost=None if r.lost is None else [asdict(lost) for lost in r.lost],
            doubts=r.notes or None, prior=prior_label(r.prior_sha256),
        )
        if r.clipped_samples:
            result.warning = f"{r.clipped_samples} samples clipped to full scale; use --subtype FLOAT to keep them"
        return result

    return _guarded(job, options.force, run)


def verify_job(options: DecodeOptions, job: Job) -> JobResult:
    """decode -t: every checksum, the digest, token ranges and the model's shape; no output.
    An .ecdc file (no checksums): that it parses to the end, LM-coded codes included."""
    from tokpack.codec.engine import check_header_fits
    from tokpack.codec.tokens_io import open_tokens
    from tokpack.codec.registry import get_spec

    def run() -> JobResult:
        src = _source(job)
        f = open(src, "rb") if isinstance(src, Path) else src
        with f, open_tokens(f, job.source, lm_weights=options.lm_weights,
                            priors=options.priors) as reader:
            if not reader.header.tokens_only:  # tokens only: no model to fit them to
                check_header_fits(reader.header, get_spec(reader.header.model_id))
            for _ in reader:
                pass
            trailer, size = reader.trailer, reader.bytes_read
        duration = trailer.source_frames / reader.header.source_sample_rate
        return JobResult(
            job.source, None, "ok", bytes_in=size, duration_s=duration,
            bitrate_bps=size * 8 / duration if duration > 0 else None,
        )

    return _guarded(job, False, run)


def probe_seconds(job: Job, kind: str) -> float:
    """Audio seconds of an input, cheaply (for progress); 0.0 if it cannot be told."""
    if job.source == STDIO:
        return 0.0
    try:
        if kind == "encode":
            import soundfile

            return float(soundfile.info(job.source).duration)
        from tokpack.codecs.encodec.ecdc import MAGIC, read_ecdc_info
        from tokpack.formats import read_header

        with open(job.source, "rb") as f:
            if f.read(len(MAGIC)) == MAGIC:
                info = read_ecdc_info(job.source)
                return info.audio_length / info.spec.sample_rate
        return read_header(job.source).source_duration_s or 0.0
    except (TokpackError, OSError, RuntimeError):  # reported when the input is processed
        return 0.0
