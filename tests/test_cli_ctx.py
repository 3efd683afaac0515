"""--entropy, --prior and train-prior through the CLI (test_24khz)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tokpack.cli import app
from tokpack.formats import Coder, ContainerReader, read_header
from tokpack.formats import prior as prior_files

runner = CliRunner()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, signals):
    """Three 1.5 s clips of chirps and noise at 24 kHz."""
    d = tmp_path_factory.mktemp("ctx")
    paths = []
    for i in range(3):
        x = 0.4 * signals.chirp(36_000, f0=100 + 150 * i) + signals.noise(36_000, amp=0.05, seed=i)
        paths.append(signals.write(d / f"clip{i}.wav", x, 24_000))
    return paths


def encode(*args):
    result = runner.invoke(app, ["encode", "-m", "test_24khz", "-q", *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return result


def test_entropy_choices_decode_to_the_same_audio(clips, tmp_path):
    audio = {}
    for entropy in ("auto", "ctx", "zstd", "pack"):
        tpk = tmp_path / f"{entropy}.tpk"
        encode(clips[0], "-o", tpk, "--entropy", entropy)
        coders = {c.coder for c in ContainerReader(tpk)}
        if entropy in ("ctx", "pack"):
            assert coders == {Coder.CTX if entropy == "ctx" else Coder.PACK}
        assert (read_header(tpk).version_minor == 4) == (entropy in ("auto", "ctx"))
        wav = tmp_path / f"{entropy}.wav"
        assert runner.invoke(app, ["decode", str(tpk), "-o", str(wav), "-q"]).exit_code == 0
        audio[entropy] = wav.read_bytes()
    assert len(set(audio.values())) == 1
    sizes = {e: (tmp_path / f"{e}.tpk").stat().st_size for e in audio}
    assert sizes["auto"] <= min(sizes["ctx"], sizes["zstd"]) + 32  # 1.1 header: 32 bytes more


def test_usage_errors(clips, tmp_path):
    out = str(tmp_path / "x.tpk")
    for args, message in (
        (["--entropy", "encodec-lm"], "--format ecdc"),
        (["--entropy", "zstd", "--prior", "uniform"], "--prior is for --entropy auto or ctx"),
        (["--format", "ecdc", "--prior", "uniform"], "--prior is for .tpk"),
    ):
        result = runner.invoke(app, ["encode", str(clips[0]), "-m", "test_24khz", "-o", out, *args])
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_train_prior_then_encode_and_decode_with_it(clips, tmp_path, monkeypatch):
    tpp = tmp_path / "mine.tpp"
    result = runner.invoke(app, ["train-prior", str(clips[0].parent), "-m", "test_24khz",
                                 "-o", str(tpp), "--json", "-T", "2"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    prior = prior_files.load(tpp)
    assert report["sha256"] == hashlib.sha256(tpp.read_bytes()).hexdigest() == prior.sha256.hex()
    assert report["files"] == 3 and report["folds"] == 3 and prior.n_codebooks == 32
    assert len(report["mix"]) == 32 and report["audio_seconds"] == pytest.approx(4.5, abs=0.1)
    again = runner.invoke(app, ["train-prior", str(clips[0]), "-m", "test_24khz", "-o", str(tpp)])
    assert (again.exit_code, again.stderr) == (1, f"tokpack: {tpp}: already exists (use -f to overwrite)\n")

    tpk, wav = tmp_path / "x.tpk", tmp_path / "x.wav"
    encode(clips[1], "-o", tpk, "--entropy", "ctx", "--prior", tpp)
    assert read_header(tpk).prior_sha256 == prior.sha256
    monkeypatch.delenv(prior_files.PATH_VARIABLE, raising=False)
    missing = runner.invoke(app, ["decode", str(tpk), "-o", str(wav)])
    assert missing.exit_code == 1
    assert f"tokpack: {tpk}: the tokens were coded with the CTX prior {prior.sha256.hex()}" in missing.stderr
    assert not wav.exists()
    result = runner.invoke(app, ["decode", str(tpk), "-o", str(wav), "--prior", str(tpp), "-q"])
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv(prior_files.PATH_VARIABLE, str(tmp_path))
    assert runner.invoke(app, ["decode", "-t", str(tpk)]).exit_code == 0
    # the tokens themselves are what the uniform-prior container holds
    plain = tmp_path / "plain.tpk"
    encode(clips[1], "-o", plain, "--entropy", "pack")
    ours = np.concatenate([c.tokens for c in ContainerReader(tpk)], axis=2)
    packed = np.concatenate([c.tokens for c in ContainerReader(plain)], axis=2)
    assert np.array_equal(ours, packed)


def test_a_prior_for_another_model_is_refused(clips, tmp_path):
    from tokpack.formats.prior import CodebookPrior, Prior, table

    book = CodebookPrior(strength=8, order0=table(np.ones(1024, np.int64)))
    path = tmp_path / "other.tpp"
    Prior("test_48khz", bytes(32), 1024, (book,) * 16).save(path)
    result = runner.invoke(app, ["encode", str(clips[0]), "-m", "test_24khz", "-o",
                                 str(tmp_path / "x.tpk"), "--prior", str(path)])
    assert (result.exit_code, result.stderr) == (  # a usage error, before any file
        2, f"tokpack: --prior {path}: trained for test_48khz, not test_24khz\n")
    assert not (tmp_path / "x.tpk").exists()


@pytest.mark.parametrize("model", ["test_24khz", "test_48khz"])
def test_default_encode_of_speech_uses_the_shipped_prior(model, corpus_dir, tmp_path):
    """Whatever CPU built the test model: the default encode of real speech names the
    prior shipped for it, and CTX codes its chunks."""
    src = corpus_dir / "real" / "speech_alsa_voice_48k.wav"
    out = tmp_path / "speech.tpk"
    r = runner.invoke(app, ["encode", str(src), "-m", model, "-o", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    shipped = hashlib.sha256((prior_files.SHIPPED_DIR / f"{model}.tpp").read_bytes()).hexdigest()
    assert json.loads(r.stdout)["prior"] == shipped
    assert read_header(out).prior_sha256.hex() == shipped
    assert Coder.CTX in {c.coder for c in ContainerReader(out)}


def test_a_missing_default_prior_is_said(clips, tmp_path, test_24khz):
    """No prior was made for these weights (an official model's name on other weights,
    as for the official models today): said once at -v, "generic" in the JSON."""
    args = ["encode", *map(str, clips[:2]), "-m", "encodec_24khz", "--weights",
            str(test_24khz.weights_path), "--output-dir", str(tmp_path / "a")]
    r = runner.invoke(app, [*args, "-v"])
    assert r.exit_code == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "no CTX prior was made" in line]
    assert said == [f"tokpack: no CTX prior was made for encodec_24khz weights "
                    f"{test_24khz.weights_hex[:12]} (none shipped, none in $TOKPACK_PRIOR_PATH): "
                    f"coding with the generic prior, which saves less than the figures in "
                    f"docs/ENTROPY.md; `tokpack train-prior` makes one"]
    gains = [line for line in r.stderr.splitlines() if "a CTX prior trained for this model" in line]
    assert len(gains) == 2 and all("`tokpack train-prior` makes one" in line for line in gains)
    assert "no CTX prior" not in runner.invoke(app, [*args, "-f"]).stderr  # only at -v
    r = runner.invoke(app, [*args, "-f", "--json"])
    assert [json.loads(line)["prior"] for line in r.stdout.splitlines()] == ["generic"] * 2
    assert [json.loads(line)["prior_gain"] for line in r.stdout.splitlines()] == [None] * 2
    r = runner.invoke(app, [*args, "-f", "--json", "-v"])
    assert all(isinstance(json.loads(line)["prior_gain"], float) for line in r.stdout.splitlines())
    r = runner.invoke(app, ["encode", str(clips[0]), "-m", "test_24khz", "-o",
                            str(tmp_path / "b.tpk"), "-v"])
    assert r.exit_code == 0 and "no CTX prior" not in r.stderr


@pytest.mark.slow  # two 20 s encodes and two decodes; tests/test_formats_carry.py is the fast cover
def test_long_audio_carries_the_models_and_decodes_the_same(tmp_path, signals):
    """20.5 s at 24 kHz: three chunks, a keyframe every 60 s, so chunks 1 and 2 carry the
    models on (coder 4); --keyframe 0 codes the same tokens in independent chunks (a 1.1
    file); the carried file decodes, and salvage loses the chunk after a damaged one.
    (--entropy ctx: `auto` may pack a chunk of a test model's tokens, as it did chunk 1
    with recipe 4's and 5's test_24khz, and a packed chunk carries nothing.)"""
    x = 0.4 * signals.chirp(492_000, f0=80) + signals.noise(492_000, amp=0.05, seed=9)
    wav = signals.write(tmp_path / "long.wav", x, 24_000)
    carried, alone = tmp_path / "carried.tpk", tmp_path / "alone.tpk"
    encode(wav, "-o", carried, "--entropy", "ctx")
    encode(wav, "-o", alone, "--keyframe", "0", "--entropy", "ctx")
    assert [c.coder for c in ContainerReader(carried)][1:] == [Coder.CTX_CARRY] * 2
    assert read_header(carried).ctx_keyframe == 6 and read_header(alone).version_minor == 1
    assert Coder.CTX_CARRY not in {c.coder for c in ContainerReader(alone)}
    tokens = [np.concatenate([c.tokens for c in ContainerReader(p)], axis=2) for p in (carried, alone)]
    assert np.array_equal(tokens[0], tokens[1])
    assert carried.stat().st_size < alone.stat().st_size
    result = runner.invoke(app, ["decode", str(carried), "-o", str(tmp_path / "carried.wav"), "-q"])
    assert result.exit_code == 0, result.stderr
    data = bytearray(carried.read_bytes())
    data[list(ContainerReader(carried))[1].offset + 40] ^= 0xFF  # chunk 1 damaged
    damaged = tmp_path / "damaged.tpk"
    damaged.write_bytes(bytes(data))
    result = runner.invoke(app, ["decode", str(damaged), "--salvage", "-o",
                                 str(tmp_path / "salvaged.wav")])
    assert result.exit_code == 0, result.stderr
    assert "chunk 1 lost" in result.stderr and "chunk 2 lost" in result.stderr
    assert "continue from a lost chunk" in result.stderr
