"""CLI behaviour that needs no model: help, version, usage errors, output rules."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tokpack import __version__
from tokpack.cli import app
from tokpack.batch import AUDIO_SUFFIXES, Job, check_destination, default_threads, plan_jobs, resolve_jobs
from tokpack.cli.batch_run import check_stdout
from tokpack.cli.output import Messages
from tokpack.cli.report import show_progress
from tokpack.errors import TokpackError, UsageError

runner = CliRunner()
COMMANDS = ["encode", "decode", "inspect", "compare", "bench"]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"tokpack {__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: tokpack " + command in " ".join(result.stdout.split())


def _imported_after(args_list) -> list[str]:
    """The modules a fresh interpreter has imported after running each ``tokpack ARGS``."""
    code = (
        "import sys\n"
        "from tokpack.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner()\n"
        f"for args in {args_list!r}:\n"
        "    assert r.invoke(app, args).exit_code == 0, args\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_help_and_version_import_no_command():
    """``tokpack --help`` lists the commands from the table: no command module, no numpy."""
    modules = _imported_after([["--help"], ["--version"]])
    assert [m for m in modules if m.startswith("tokpack.cli.") and m not in (
        "tokpack.cli.app", "tokpack.cli.command", "tokpack.cli.output")] == []
    assert "numpy" not in modules
    assert "numpy" not in _imported_after([["models"], ["models", "--json"]])


def test_light_commands_do_not_import_torch():
    modules = _imported_after([["--help"], ["--version"], ["encode", "--help"], ["decode", "--help"],
                               ["models"], ["models", "--json"], ["pack", "--help"],
                               ["unpack", "--help"], ["dataset", "--help"]])
    heavy = ("torch", "torchaudio", "encodec", "transformers", "huggingface_hub", "pyarrow")
    assert [m for m in heavy if m in modules] == []


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["encode", "x.wav", "--no-such-option"])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_bad_sample_rate_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["decode", str(tmp_path / "x.tpk"), "--sample-rate", "fast"])
    assert result.exit_code == 2
    assert "tokpack: --sample-rate: expected 'original', 'model' or a rate in Hz, got 'fast'" in result.stderr


def test_stdin_needs_an_output(tmp_path):
    result = runner.invoke(app, ["encode", "-"], input=b"")
    assert result.exit_code == 2
    assert result.stderr == "tokpack: reading from stdin: give -o FILE or -c to write to stdout\n"


def test_an_existing_output_fails_alone_and_is_skipped_in_a_batch(tmp_path):
    """As zstd and flac: one named input whose output exists fails (exit 1) unless -f; a
    batch skips it and counts it."""
    src = tmp_path / "a.wav"
    src.write_bytes(b"not audio")
    dst = tmp_path / "a.tpk"
    dst.write_bytes(b"precious")
    result = runner.invoke(app, ["encode", str(src), "-m", "test_24khz"])
    assert result.exit_code == 1
    assert result.stderr == f"tokpack: {src}: {dst} already exists (use -f to overwrite)\n"
    other = tmp_path / "b.wav"
    other.write_bytes(b"not audio either")
    result = runner.invoke(app, ["encode", str(src), str(other), "-m", "test_24khz"])
    assert result.exit_code == 1  # b.wav is not audio
    assert f"tokpack: {dst}: already exists, skipped (use -f to overwrite)\n" in result.stderr
    assert result.stderr.splitlines()[-1] == "tokpack: 0 ok, 1 skipped, 1 failed"
    assert dst.read_bytes() == b"precious"


def plan(inputs, **kw):
    return plan_jobs(inputs, suffix=".tpk", walk_suffixes=AUDIO_SUFFIXES, **kw)


def test_default_output_names(tmp_path):
    src = tmp_path / "speech.wav"
    assert plan([str(src)]) == [Job(str(src), tmp_path / "speech.tpk", alone=True)]
    assert plan([str(src)], output="-") == [Job(str(src), None, alone=True)]
    assert plan([str(src)], stdout=True) == [Job(str(src), None, alone=True)]
    assert plan([str(src)], output=str(tmp_path / "x.bin")) == [
        Job(str(src), tmp_path / "x.bin", alone=True)]
    assert plan([str(src), str(tmp_path / "b.wav")]) == [
        Job(str(src), tmp_path / "speech.tpk"), Job(str(tmp_path / "b.wav"), tmp_path / "b.tpk")]


def test_directories_need_recursive_and_mirror_into_output_dir(tmp_path):
    (tmp_path / "in" / "b" / "c").mkdir(parents=True)
    for rel in ("a.wav", "b/x.flac", "b/c/y.WAV", "b/notes.txt", "b/.hidden.wav"):
        (tmp_path / "in" / rel).write_bytes(b"")
    with pytest.raises(UsageError, match="is a directory \\(use -r"):
        plan([str(tmp_path / "in")])
    jobs = plan([str(tmp_path / "in")], recursive=True, output_dir=str(tmp_path / "out"))
    assert [(Path(j.source).relative_to(tmp_path / "in").as_posix(), j.dest.relative_to(tmp_path).as_posix()) for j in jobs] == [
        ("a.wav", "out/a.tpk"),
        ("b/x.flac", "out/b/x.tpk"),
        ("b/c/y.WAV", "out/b/c/y.tpk"),
    ]
    beside = plan([str(tmp_path / "in")], recursive=True)
    assert beside[1].dest == tmp_path / "in" / "b" / "x.tpk"


def test_two_inputs_never_share_an_output(tmp_path):
    for name in ("a.flac", "a.ogg", "a.wav"):
        (tmp_path / name).write_bytes(b"")
    assert [j.dest.name for j in plan([str(tmp_path)], recursive=True)] == ["a.tpk", "a.ogg.tpk", "a.wav.tpk"]
    with pytest.raises(UsageError, match="a.flac is given twice"):
        plan([str(tmp_path / "a.flac"), str(tmp_path / "a.flac")])
    (tmp_path / "a.ogg.flac").write_bytes(b"")  # a.ogg.tpk is now taken twice over
    with pytest.raises(UsageError, match="would both be written to"):
        plan([str(tmp_path / "a.flac"), str(tmp_path / "a.ogg.flac"), str(tmp_path / "a.ogg")])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(output="x.tpk"), "-o and -c take exactly one input, got 2"),
        (dict(stdout=True), "-o and -c take exactly one input, got 2"),
        (dict(output="x.tpk", output_dir="d"), "mutually exclusive"),
    ],
)
def test_single_output_options_need_one_input(kwargs, message):
    with pytest.raises(UsageError, match=message):
        plan(["a.wav", "b.wav"], **kwargs)


def test_same_input_and_output_is_refused(tmp_path):
    src = tmp_path / "x.tpk"
    src.write_bytes(b"x")
    with pytest.raises(TokpackError, match="input and output are the same file"):
        check_destination(Job(str(src), src), force=True)


def test_binary_to_a_terminal_is_refused_unless_forced(monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    say = Messages()
    with pytest.raises(typer.Exit) as exit_:
        check_stdout(say, [Job("x.wav", None)], json_output=False, force=False)
    assert exit_.value.exit_code == 1
    assert capsys.readouterr().err == "tokpack: <stdout>: refusing to write binary data to a terminal (use -f to force)\n"
    check_stdout(say, [Job("x.wav", None)], json_output=False, force=True)
    check_stdout(say, [Job("x.wav", Path("x.tpk"))], json_output=False, force=False)


def test_progress_decision():
    assert show_progress(None, quiet=False, stderr_is_tty=True) is True
    assert show_progress(None, quiet=False, stderr_is_tty=False) is False
    assert show_progress(None, quiet=True, stderr_is_tty=True) is False
    assert show_progress(True, quiet=False, stderr_is_tty=False) is True
    assert show_progress(False, quiet=False, stderr_is_tty=True) is False


def test_jobs_and_threads_division(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert resolve_jobs(0, 100) == 8 and resolve_jobs(4, 2) == 2 and resolve_jobs(1, 5) == 1
    assert default_threads(4, None) == 2 and default_threads(3, None) == 2 and default_threads(1, None) is None
    assert default_threads(4, 3) == 3


def test_stdout_and_output_file_conflict():
    result = runner.invoke(app, ["encode", "x.wav", "-c", "-o", "y.tpk"])
    assert result.exit_code == 2
    assert "mutually exclusive" in result.stderr


@pytest.mark.parametrize("args, status", [(["--version"], 0), (["inspect", "/nonexistent.tpk"], 1),
                                          (["encode", "--no-such-option"], 2)])
def test_the_console_script_skips_torchs_teardown_but_not_pythons(args, status):
    """``console`` (the ``tokpack`` script, ``python -m tokpack``): with torch loaded it ends
    by os._exit with main's status, after Python's atexit handlers and with stdout flushed;
    without torch, or while another thread runs, it exits as main does."""
    code = ("import atexit, os, sys, threading\n"
            "real = os._exit\n"
            "os._exit = lambda s: (sys.stderr.write(f'os._exit {s}\\n'), real(s))\n"
            "if sys.argv[1] == 'torch':\n    import torch\n"
            "if sys.argv[2] == 'thread':\n"
            "    done = threading.Event()\n"
            "    threading.Thread(target=done.wait, args=(0.5,)).start()\n"
            "atexit.register(lambda: print('atexit ran', end=''))\n"
            "sys.argv = ['tokpack'] + sys.argv[3:]\n"
            "from tokpack.cli import console\n"
            "console()\n")
    for torch_loaded, thread in ((True, ""), (False, ""), (True, "thread")):
        r = subprocess.run([sys.executable, "-c", code, "torch" if torch_loaded else "-", thread or "-",
                            *args], capture_output=True, text=True)
        assert r.returncode == status, (torch_loaded, thread, r.stderr)
        assert r.stdout.endswith("atexit ran"), (torch_loaded, thread, r.stdout)
        skipped = f"os._exit {status}" in r.stderr
        assert skipped == (torch_loaded and not thread), (torch_loaded, thread, r.stderr)
        if status:
            assert r.stderr.splitlines()[0].startswith("tokpack: "), r.stderr
