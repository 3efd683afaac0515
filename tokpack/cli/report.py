"""How a batch of encode/decode jobs is reported: lines, NDJSON, progress, final summary."""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager, nullcontext

import typer

from tokpack.batch import Job, JobResult, Terminated, probe_seconds
from tokpack.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, Messages, human_bytes
from tokpack.formats.salvage import LostRange

EXIT_TERMINATED = 143


def show_progress(flag: bool | None, *, quiet: bool, stderr_is_tty: bool) -> bool:
    """Progress bars: automatic on a terminal, off when piped or quiet; --[no-]progress wins."""
    if flag is not None:
        return flag
    return stderr_is_tty and not quiet


class BatchReport(AbstractContextManager):
    """Prints each result as it arrives and the final count; owns the progress bar."""

    def __init__(self, say: Messages, jobs: list[Job], *, kind: str, json_output: bool, progress: bool) -> None:
        self.say = say
        self.kind = kind
        self.json_output = json_output
        self.single = len(jobs) == 1
        self._notes: set[str] = set()  # said once per batch
        self._progress = None
        self._bar: AbstractContextManager = nullcontext()
        #: a single input's bar follows its seconds of audio (see audio_progress)
        self.tracks_audio = bool(progress) and self.single and kind in ("encode", "decode")
        if progress and (not self.single or self.tracks_audio):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._seconds = {job.source: probe_seconds(job, kind) for job in jobs}
            if self.tracks_audio:
                count = TextColumn("{task.completed:.0f}/{task.total:.0f} s of audio")
                total = self._seconds[jobs[0].source] or None  # unknown (stdin): no bar length
            else:
                count = MofNCompleteColumn()
                total = len(jobs)
            columns = [TextColumn("{task.description}"), BarColumn(), count]
            if not self.tracks_audio:
                columns.append(TextColumn("{task.fields[audio]:.0f} s of audio"))
            self._progress = Progress(
                *columns, TimeRemainingColumn(),
                console=Console(stderr=True), transient=True, redirect_stdout=False, redirect_stderr=True,
            )
            self._task = self._progress.add_task(kind, total=total, audio=0.0)
            self._bar = self._progress

    def __enter__(self) -> BatchReport:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def on_result(self, r: JobResult) -> None:
        if self.json_output:
            sys.stdout.write(json.dumps(r.to_json()) + "\n")
            sys.stdout.flush()
        if r.status == "failed":
            self.say.error(r.path, r.error or "failed")
        elif r.status == "skipped":
            self.say.info(f"tokpack: {r.output}: {r.error}")
        else:
            for lost in r.lost or ():  # chunks of the input that decode --salvage could not use
                self.say.warning(r.path, LostRange(**lost).describe())
            for doubt in r.doubts or ():
                self.say.warning(r.path, doubt)
            if r.warning:  # about the input when encoding (its header), the output when decoding
                self.say.warning(r.path if self.kind == "encode" else r.output or "<stdout>", r.warning)
            if r.note and r.note not in self._notes:  # e.g. no default prior for the weights
                self._notes.add(r.note)
                self.say.verbose(f"tokpack: {r.note}")
            self.say.info(self.summary_line(r))  # every file, as zstd does
            if r.prior_gain is not None:
                self.say.verbose(
                    f"tokpack: {r.output}: a CTX prior trained for this model would code these "
                    f"tokens about {max(r.prior_gain, 0.0):.1%} smaller than the generic prior "
                    f"(estimated: tables learned from the first half code the second); "
                    f"`tokpack train-prior` makes one")
        if self._progress is not None and not self.tracks_audio:
            done = self._progress.tasks[0].fields["audio"] + self._seconds.get(r.path, 0.0)
            self._progress.update(self._task, advance=1, audio=done)

    def audio_progress(self, seconds: float) -> None:
        """A single input's progress: ``seconds`` of its audio done."""
        if self._progress is not None:
            self._progress.update(self._task, completed=seconds)

    def summary_line(self, r: JobResult) -> str:
        """zstd-like: ``speech.wav : 1.18% (281.3 KiB => 3.3 KiB, 6.00 kbps, speech.tpk)``."""
        name = "<stdin>" if r.path == "-" else r.path
        out = r.output or "<stdout>"
        if self.kind == "encode":
            ratio = r.bytes_out / r.bytes_in if r.bytes_in else 0.0
            return (f"{name} : {ratio:.2%} ({human_bytes(r.bytes_in or 0)} => {human_bytes(r.bytes_out or 0)}, "
                    f"{(r.bitrate_bps or 0) / 1000:.2f} kbps, {out})")
        if self.kind == "decode":
            return f"{name} : {human_bytes(r.bytes_in or 0)} => {human_bytes(r.bytes_out or 0)} ({r.duration_s:.2f} s, {out})"
        return f"{name} : OK ({human_bytes(r.bytes_in or 0)}, {r.duration_s:.2f} s)"

    def finish(self, results: list[JobResult]) -> None:
        """The batch count on stderr; exit 1 if anything failed."""
        counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
        if not self.single:
            self.say.info(f"tokpack: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed")
        if counts["failed"]:
            raise typer.Exit(EXIT_FAILED)


def interrupted(exc: BaseException) -> typer.Exit:
    """The exit for Ctrl-C (130) or SIGTERM (143); temporaries are already removed."""
    return typer.Exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
