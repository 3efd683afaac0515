"""What cost a new user their first hour (issue #14), one test per item: exact exit
statuses and stderr lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tokpack.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def wav(tmp_path, signals):
    """1 s of chirp at 24 kHz, as speech.wav in an empty directory."""
    return signals.write(tmp_path / "speech.wav", signals.chirp(24_000), 24_000)


def tokpack(*args, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    """The real console entry point (tokpack.cli.main) in a child process."""
    return subprocess.run([sys.executable, "-m", "tokpack", *map(str, args)], cwd=cwd,
                          capture_output=True, **kwargs)


# 1. every option is checked before any file is touched: a usage error, once


@pytest.mark.parametrize("args, message", [
    (["-m", "nosuch"], "tokpack: unknown model 'nosuch'; known models: encodec_24khz, "
                       "encodec_48khz, test_24khz, test_48khz, mimi, dac_44khz, dac_24khz, "
                       "dac_16khz, test_mimi, test_dac_44khz\n"),
    (["-m", "test_24khz", "-b", "5"], "tokpack: model test_24khz has no bandwidth 5 kbps; "
                                      "choose one of 1.5, 3, 6, 12, 24\n"),
    (["--weights", "missing.th"], "tokpack: --weights missing.th: no such file\n"),
    (["-m", "test_24khz", "--prior", "missing.tpp"],
     "tokpack: --prior missing.tpp: No such file or directory\n"),
])
def test_bad_options_are_usage_errors_before_any_file(wav, tmp_path, args, message):
    existing = tmp_path / "speech.tpk"
    existing.write_bytes(b"precious")
    other = tmp_path / "other.wav"
    other.write_bytes(wav.read_bytes())
    for inputs in ([wav], [wav, other, tmp_path / "absent.wav"]):
        r = runner.invoke(app, ["encode", *map(str, inputs), *args])
        assert (r.exit_code, r.stderr) == (2, message)
    assert existing.read_bytes() == b"precious" and not (tmp_path / "other.tpk").exists()


def test_decode_options_are_checked_first(tmp_path):
    r = runner.invoke(app, ["decode", str(tmp_path / "absent.tpk"), "--prior", str(tmp_path / "p.tpp")])
    assert (r.exit_code, r.stderr) == (2, f"tokpack: --prior {tmp_path / 'p.tpp'}: No such file or directory\n")
    r = runner.invoke(app, ["decode", str(tmp_path / "absent.tpk"), "--lm-weights", "no.th"])
    assert (r.exit_code, r.stderr) == (2, "tokpack: --lm-weights no.th: no such file\n")


def test_a_model_that_cannot_load_is_said_once(wav, tmp_path):
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"not a checkpoint")
    inputs = [wav]
    for i in range(2):
        inputs.append(Path(wav).with_name(f"copy{i}.wav"))
        inputs[-1].write_bytes(wav.read_bytes())
    r = runner.invoke(app, ["encode", *map(str, inputs), "-m", "test_24khz", "--weights", str(bad)])
    assert r.exit_code == 1
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"tokpack: {bad}: ")
    assert not list(tmp_path.glob("*.tpk"))


# 2. the README's workflow works as shown, in a fresh directory


def test_the_readme_workflow(wav, tmp_path):
    assert tokpack("encode", "speech.wav", "-m", "test_24khz", cwd=tmp_path).returncode == 0
    r = tokpack("decode", "speech.tpk", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().startswith("speech.tpk : ") and "speech.out.wav" in r.stderr.decode()
    r = tokpack("compare", "speech.wav", "speech.out.wav", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["compared_frames"] == 24_000
    readme = (REPO / "README.md").read_text()
    assert "tokpack decode speech.tpk                      # -> speech.out.wav" in readme
    assert "tokpack compare speech.wav speech.out.wav" in readme


# 3. one policy for an output in the way: alone, exit 1; in a batch, skipped and counted


def test_an_existing_output_alone_fails_for_every_command(wav, tmp_path):
    (tmp_path / "speech.tpk").write_bytes(b"x")
    r = runner.invoke(app, ["encode", str(wav), "-m", "test_24khz"])
    assert (r.exit_code, r.stderr) == (
        1, f"tokpack: {wav}: {tmp_path / 'speech.tpk'} already exists (use -f to overwrite)\n")
    prior = tmp_path / "my.tpp"
    prior.write_bytes(b"x")
    r = runner.invoke(app, ["train-prior", str(wav), "-m", "test_24khz", "-o", str(prior)])
    assert (r.exit_code, r.stderr) == (1, f"tokpack: {prior}: already exists (use -f to overwrite)\n")
    assert prior.read_bytes() == b"x"


def test_a_rerun_batch_skips_and_counts(wav, tmp_path):
    other = Path(wav).with_name("other.wav")
    other.write_bytes(wav.read_bytes())
    args = ["encode", str(wav), str(other), "-m", "test_24khz"]
    assert runner.invoke(app, args + ["-q"]).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 0
    assert r.stderr.splitlines()[-1] == "tokpack: 0 ok, 2 skipped, 0 failed"


# 4. nothing is loaded before a file needs it


def test_a_rerun_whose_outputs_all_exist_does_not_import_torch(wav, tmp_path):
    other = Path(wav).with_name("other.wav")
    other.write_bytes(wav.read_bytes())
    for name in ("speech.tpk", "other.tpk"):
        (tmp_path / name).write_bytes(b"done before")
    code = ("import sys; from tokpack.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules, 'encodec' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, "encode", str(wav), str(other), "-m",
                        "test_24khz"], capture_output=True, text=True)
    assert r.stdout.split() == ["0", "False", "False"], r.stderr


# 5. a closed pipe ends tokpack quietly


def test_a_closed_pipe_ends_quietly(tmp_path, signals):
    long = signals.write(tmp_path / "long.wav", signals.chirp(10 * 24_000), 24_000)
    tpk = tmp_path / "x.tpk"  # decodes to 480 KB: more than a pipe holds
    assert runner.invoke(app, ["encode", str(long), "-m", "test_24khz", "-o", str(tpk)]).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "tokpack", "decode", str(tpk), "-c"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(64)) == 64
    proc.stdout.close()  # as `| head -c 64` does
    assert proc.wait(60) == 1
    assert proc.stderr.read() == b""


# 6. inspect reads .ecdc, and names what a non-container looks like


def test_inspect_reads_ecdc_and_names_a_wav(wav, tmp_path):
    ecdc = tmp_path / "speech.ecdc"
    assert runner.invoke(app, ["encode", str(wav), "-m", "test_24khz", "--format", "ecdc", "-q"]).exit_code == 0
    r = runner.invoke(app, ["inspect", str(ecdc), "--json"])
    assert r.exit_code == 0, r.stderr
    obj = json.loads(r.stdout)
    assert (obj["format"], obj["model_id"], obj["coders"], obj["total_frames"]) == (
        "ecdc", "test_24khz", {"bitpack": 1}, 75)
    assert obj["file_bytes"] == ecdc.stat().st_size
    r = runner.invoke(app, ["inspect", str(wav)])
    assert (r.exit_code, r.stderr) == (1, f"tokpack: {wav}: offset 0, magic: this looks like a WAV "
                                          f"file, not a token container: did you mean `tokpack encode`?\n")


# 7. help fits 80 columns without type names; usage errors are one line


@pytest.mark.parametrize("command", ["", "encode", "decode", "inspect", "compare", "bench",
                                     "train-prior", "models", "pack", "unpack"])
def test_help_fits_80_columns_without_type_names(command):
    r = tokpack(*([command] if command else []), "-h", env={**os.environ, "COLUMNS": "80"})
    text = r.stdout.decode()
    assert r.returncode == 0 and text.startswith("Usage: tokpack")
    assert max(map(len, text.splitlines())) <= 80
    for leak in ("<bool>", "<list", "<str>", "<int>", "<float>", "{", "╭"):
        assert leak not in text, leak
    if command == "encode":
        assert text.splitlines()[0] == "Usage: tokpack encode [OPTIONS] INPUT..."
        assert len(text.splitlines()) <= 60


def test_usage_errors_are_one_line():
    r = tokpack("encode")
    assert (r.returncode, r.stderr.decode()) == (
        2, "tokpack: missing argument 'INPUT...' (see 'tokpack encode -h')\n")
    r = tokpack("encode", "x.wav", "--bogus")
    assert r.returncode == 2 and r.stderr.decode().startswith("tokpack: no such option: --bogus")
    assert r.stderr.decode().count("\n") == 1


# 8. no silences: every file's line, progress for one long file, plain words


def test_every_file_gets_its_summary_line(wav, tmp_path):
    other = Path(wav).with_name("other.wav")
    other.write_bytes(wav.read_bytes())
    r = runner.invoke(app, ["encode", str(wav), str(other), "-m", "test_24khz"])
    lines = r.stderr.splitlines()
    assert r.exit_code == 0 and len(lines) == 3
    assert lines[0].startswith(f"{wav} : ") and lines[1].startswith(f"{other} : ")


def test_one_input_shows_its_audio_progress(wav, tmp_path):
    from tokpack.batch import Job
    from tokpack.cli.output import Messages
    from tokpack.cli.report import BatchReport
    from tokpack.codec.engine import decode, encode

    job = Job(str(wav), tmp_path / "x.tpk", alone=True)
    report = BatchReport(Messages(), [job], kind="encode", json_output=False, progress=True)
    assert report.tracks_audio
    assert not BatchReport(Messages(), [job, job], kind="encode", json_output=False,
                           progress=True).tracks_audio
    seen: list[float] = []
    encode(wav, tmp_path / "x.tpk", model="test_24khz", progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    seen.clear()
    decode(tmp_path / "x.tpk", tmp_path / "x.wav", progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def test_inspect_shows_a_saving_as_a_smaller_size(corpus_dir, tmp_path):
    speech = corpus_dir / "real" / "speech_alsa_voice_48k.wav"
    tpk = tmp_path / "x.tpk"
    assert runner.invoke(app, ["encode", str(speech), "-m", "test_24khz", "-o", str(tpk)]).exit_code == 0
    gains = [c["coder_gain"] for c in json.loads(runner.invoke(app, ["inspect", str(tpk), "--json"]).stdout)["codebooks"]]
    rows = runner.invoke(app, ["inspect", str(tpk)]).stdout.splitlines()[-len(gains):]
    assert [row.split()[-1] for row in rows] == [f"{-g:+.1%}" for g in gains]
    assert any(g > 0 for g in gains) and all(row.split()[-1][0] == ("-" if g > 0 else "+")
                                             for g, row in zip(gains, rows) if g)


def test_libsndfile_words_are_translated(wav, tmp_path):
    data = bytearray(wav.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 12:fmt + 16] = bytes(4)  # sample rate 0
    bad = tmp_path / "rate0.wav"
    bad.write_bytes(bytes(data))
    r = runner.invoke(app, ["encode", str(bad), "-m", "test_24khz"])
    assert (r.exit_code, r.stderr) == (1, f"tokpack: {bad}: cannot read audio: the header declares "
                                          f"a sample rate or channel count of 0\n")


# 9. the basics: completion, a list of models, arrays in Python, no silent overwrite


def test_shell_completion_is_offered():
    """The bash script, named: typer otherwise detects the shell from the process tree,
    which a test run does not always have (pytest started by no shell: "Shell  not
    supported"); its test switch makes --show-completion take the shell's name."""
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    r = tokpack("--show-completion", "bash", env=env)
    assert r.returncode == 0 and b"_TOKPACK_COMPLETE" in r.stdout, r.stderr


def test_models_are_listed():
    r = runner.invoke(app, ["models", "--json"])
    rows = {row["model"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert list(rows) == ["encodec_24khz", "encodec_48khz", "test_24khz", "test_48khz", "mimi",
                          "dac_44khz", "dac_24khz", "dac_16khz", "test_mimi", "test_dac_44khz"]
    first = rows["encodec_24khz"]
    assert first["bandwidths_kbps"] == [1.5, 3.0, 6.0, 12.0, 24.0]
    assert first["codebooks"] == [2, 4, 8, 16, 32]
    assert first["default_bandwidth_kbps"] == 6.0
    mimi = rows["mimi"]
    assert (mimi["family"], mimi["extra"], mimi["codebook_size"], mimi["frame_rate_hz"]) == (
        "mimi", "codecs", 2048, 12.5)
    assert mimi["codebooks"] == [4, 8, 16, 32] and mimi["default_bandwidth_kbps"] == 1.1
    assert mimi["weights"] == "official kyutai/mimi (Hugging Face)"
    assert rows["dac_44khz"]["codebooks"][-1] == 9 and rows["dac_44khz"]["sample_rate"] == 44_100
    assert {row["extra"] for row in rows.values() if row["family"] == "encodec"} == {None}
    text = runner.invoke(app, ["models"]).stdout.splitlines()
    assert text[1].split()[:7] == ["encodec_24khz", "encodec", "24k", "1", "75", "1024", "1.5(2)"]
    assert text[6].split()[:3] == ["dac_44khz", "dac", "44.1k"]


def test_python_api_on_arrays(test_24khz, test_48khz, signals):
    import tokpack
    from tokpack.formats import loads

    x = signals.chirp(24_321)[:, 0]  # mono, 1-D
    enc = tokpack.encode_array(x, 24_000, test_24khz, 6.0)
    assert enc.tokens.shape == (1, 8, 77) and enc.tokens.dtype == np.uint16
    assert enc.scales is None and enc.header.source_frames == 24_321
    y, rate = tokpack.decode_tokens(enc)
    assert (y.shape, y.dtype, rate) == ((24_321, 1), np.float32, 24_000)
    stereo = signals.chirp(50_000, rate=48_000, channels=2)
    enc = tokpack.encode_array(stereo, 48_000, test_48khz)
    assert enc.segment_frames.tolist() == [150, 8] and enc.scales.shape == (2, 1)
    y, rate = tokpack.decode_tokens(enc)
    assert (y.shape, rate) == ((50_000, 2), 48_000)
    again, _ = tokpack.decode_tokens(loads(enc.to_bytes()))  # from a container's bytes
    assert np.array_equal(again, y)


def test_file_functions_refuse_to_overwrite(wav, tmp_path, test_24khz):
    import tokpack
    from tokpack.errors import OutputError

    out = tmp_path / "x.tpk"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        tokpack.encode(wav, out, model=test_24khz)
    assert out.read_bytes() == b"precious"
    tokpack.encode(wav, out, model=test_24khz, overwrite=True)
    audio = tmp_path / "y.wav"
    audio.write_bytes(b"mine")
    with pytest.raises(OutputError, match="already exists"):
        tokpack.decode(out, audio, model=test_24khz)
    assert audio.read_bytes() == b"mine"
    tokpack.decode(out, audio, model=test_24khz, overwrite=True)
    assert sf.info(audio).frames == 24_000


def test_no_clobber_holds_under_a_race(tmp_path):
    """An output that appears while tokpack writes is not replaced (link, not rename)."""
    from tokpack._io import atomic_write
    from tokpack.errors import OutputError

    out = tmp_path / "x.tpk"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_write(out, overwrite=False) as f:
            f.write(b"ours")
            out.write_bytes(b"theirs")  # another process got there first
    assert out.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tpk"]  # no temporary left


# 10. a fresh install prints no deprecation walls


def test_pyproject_uses_an_spdx_license():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # a table is deprecated in setuptools 77+
    assert project["build-system"]["requires"] == ["setuptools>=77"]
