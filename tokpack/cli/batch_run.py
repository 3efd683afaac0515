"""The part encode and decode share: plan the jobs, check stdout, run them, report."""

from __future__ import annotations

import sys
from functools import partial

import typer

from tokpack.batch import Fatal, Job, Terminated, plan_jobs, resolve_jobs, run_jobs
from tokpack.cli.output import EXIT_FAILED, Messages, usage_error
from tokpack.cli.report import BatchReport, interrupted, show_progress
from tokpack.errors import UsageError


def checked(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a UsageError it raises made a usage error (exit status 2)."""
    try:
        return fn(*args, **kwargs)
    except UsageError as exc:
        raise usage_error(exc.message) from None


def plan(inputs: list[str], **kwargs) -> list[Job]:
    return checked(plan_jobs, inputs, **kwargs)


def check_stdout(say: Messages, jobs: list[Job], *, json_output: bool, force: bool, test: bool = False) -> None:
    to_stdout = not test and any(job.dest is None for job in jobs)
    if to_stdout and json_output:
        raise usage_error("--json and binary output both want stdout: use -o FILE or --output-dir")
    if to_stdout and sys.stdout.isatty() and not force:
        say.error("<stdout>", "refusing to write binary data to a terminal (use -f to force)")
        raise typer.Exit(EXIT_FAILED)


def run(say: Messages, jobs: list[Job], work, options, *, kind: str, n_jobs: int, json_output: bool,
        progress: bool | None) -> None:
    n = resolve_jobs(n_jobs, len(jobs))
    shown = show_progress(progress, quiet=say.verbosity < 0, stderr_is_tty=sys.stderr.isatty())
    with BatchReport(say, jobs, kind=kind, json_output=json_output, progress=shown) as report:
        try:
            bound = partial(work, options) if options is not None else work
            if report.tracks_audio:  # one input, run here: its bar follows its audio
                bound = partial(bound, progress=report.audio_progress)
            results = run_jobs(jobs, bound, n_jobs=n, on_result=report.on_result)
        except (KeyboardInterrupt, Terminated) as exc:
            raise interrupted(exc) from None
        except Fatal as exc:  # e.g. the model cannot be loaded: said once, not per file
            say.error(exc.path, exc.message)
            raise typer.Exit(EXIT_FAILED) from None
    report.finish(results)
