"""CLI behaviour that needs no model: help, version, usage errors, output rules."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tokpack import __version__
from tokpack.cli import app
from tokpack.cli import paths
from tokpack.errors import TokpackError

runner = CliRunner()
COMMANDS = ["encode", "decode", "inspect"]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"tokpack {__version__}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: tokpack " + command in " ".join(result.stdout.split())


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from tokpack.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner()\n"
        "for args in (['--help'], ['--version'], ['encode', '--help'], ['decode', '--help']):\n"
        "    assert r.invoke(app, args).exit_code == 0, args\n"
        "print(sorted(m for m in ('torch', 'torchaudio', 'encodec') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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


def test_existing_output_is_not_overwritten(tmp_path):
    src = tmp_path / "a.wav"
    src.write_bytes(b"not audio")
    dst = tmp_path / "a.tpk"
    dst.write_bytes(b"precious")
    result = runner.invoke(app, ["encode", str(src), "-m", "test_24khz"])
    assert result.exit_code == 1
    assert result.stderr == f"tokpack: {dst}: already exists; use -f to overwrite\n"
    assert dst.read_bytes() == b"precious"


def test_default_output_names(tmp_path):
    src = tmp_path / "speech.wav"
    assert paths.resolve_destination(str(src), None, False, ".tpk", force=False).path == tmp_path / "speech.tpk"
    assert paths.resolve_destination(str(src), "-", False, ".tpk", force=True).path is None
    assert paths.resolve_destination(str(src), None, True, ".tpk", force=True).path is None


def test_same_input_and_output_is_refused(tmp_path):
    src = tmp_path / "x.tpk"
    src.write_bytes(b"x")
    with pytest.raises(TokpackError, match="input and output are the same file"):
        paths.resolve_destination(str(src), str(src), False, ".wav", force=True)


def test_binary_to_a_terminal_is_refused_unless_forced(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with pytest.raises(TokpackError, match="refusing to write binary data to a terminal"):
        paths.resolve_destination("x.wav", None, True, ".tpk", force=False)
    assert paths.resolve_destination("x.wav", None, True, ".tpk", force=True).path is None


def test_stdout_and_output_file_conflict():
    result = runner.invoke(app, ["encode", "x.wav", "-c", "-o", "y.tpk"])
    assert result.exit_code == 2
    assert "mutually exclusive" in result.stderr
