"""tokpack pack / unpack: any codec's token arrays, stored without a model and given back exactly."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tokpack.cli import app
from tokpack.errors import FieldOutOfRange, TokensError, UnsupportedFeature
from tokpack.formats import Header, read_header, spec
from tokpack.formats import tokens as packing
from tokpack.formats import prior as prior_files

runner = CliRunner()


def packed(array, codebook_size, frame_rate=12.5, **kw) -> bytes:
    buffer = io.BytesIO()
    packing.pack(array, buffer, codebook_size=codebook_size, frame_rate=frame_rate, **kw)
    return buffer.getvalue()


@settings(deadline=None, max_examples=60)
@given(
    codebook_size=st.sampled_from([2, 3, 256, 257, 1000, 1024, 2048, 4096, 65536]),
    shape=st.one_of(
        st.tuples(st.integers(1, 9), st.integers(0, 300)),
        st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(0, 100)),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_unpack_gives_back_the_packed_array(codebook_size, shape, seed):
    array = np.random.default_rng(seed).integers(0, codebook_size, shape)
    back = packing.unpack(io.BytesIO(packed(array, codebook_size)))
    assert back.shape == array.shape and np.array_equal(back, array)
    assert back.dtype == (np.uint8 if codebook_size <= 256 else np.uint16)


@pytest.mark.parametrize("shape", [(1, 0), (8, 0), (1, 1, 0), (1, 1), (1, 37), (3, 2, 50), (1, 4, 10)])
@pytest.mark.parametrize("codebook_size", [2048, 4096])  # 11- and 12-bit codebooks
def test_every_shape(shape, codebook_size):
    array = np.random.default_rng(1).integers(0, codebook_size, shape).astype(np.int32)
    data = packed(array, codebook_size, codec="snac")
    back = packing.unpack(io.BytesIO(data), dtype="int64")
    assert back.dtype == np.int64 and back.shape == array.shape and np.array_equal(back, array)
    header = read_header(io.BytesIO(data))
    assert header.tokens_only and header.model_id == "snac" and header.version_minor == 4  # 1.4: carried CTX models
    assert bool(header.flags & spec.Flags.STREAM_AXIS) == (len(shape) == 3)


def test_zipf_codes_come_out_smaller_than_bit_packing():
    """Codes as real codecs make them (a few common, many rare): CTX with the uniform prior."""
    rng = np.random.default_rng(0)
    for codebook_size, bits in ((2048, 11), (4096, 12), (1024, 10)):
        array = (rng.zipf(1.2, (8, 3000)) % codebook_size).astype(np.int64)
        size = len(packed(array, codebook_size))
        assert size <= 0.92 * array.size * bits / 8, (codebook_size, size)


def test_frame_rates_as_fractions():
    assert packing.frame_rate_fraction(12.5) == (25, 2)
    assert packing.frame_rate_fraction(86.1328125) == (11025, 128)  # DAC: 44100 / 512
    assert packing.frame_rate_fraction(12.5, 24_000) == (24_000, 1920)  # Mimi
    assert packing.frame_rate_fraction(75) == (75, 1)


@pytest.mark.parametrize(("array", "message"), [
    (np.array([[0, 1, 2048]]), "token 2048 at index (0, 2) is outside [0, 2048)"),
    (np.array([[0, -1]]), "token -1 at index (0, 1) is outside [0, 2048)"),
    (np.zeros((2, 3), np.float32), "tokens must be integers, got dtype float32"),
    (np.zeros(5, np.int64), "got shape (5,)"),
    (np.zeros((1, 2, 3, 4), np.int64), "got shape (1, 2, 3, 4)"),
    (np.zeros((65, 3), np.int64), "1..64 codebooks"),
])
def test_arrays_that_cannot_be_tokens(array, message):
    with pytest.raises(TokensError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        packed(array, 2048)


def test_the_cli_round_trip(tmp_path):
    array = np.random.default_rng(2).integers(0, 2048, (8, 500))
    np.save(tmp_path / "codes.npy", array)
    r = runner.invoke(app, ["pack", str(tmp_path / "codes.npy"), "-K", "2048", "--frame-rate", "12.5",
                            "--codec", "mimi"])
    assert r.exit_code == 0, r.stderr
    assert r.stderr.startswith(f"{tmp_path / 'codes.npy'} : ") and "4000 tokens of 11 bits" in r.stderr
    r = runner.invoke(app, ["unpack", str(tmp_path / "codes.tpk")])
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "codes.out.npy"), array)  # never the array it came from
    r = runner.invoke(app, ["unpack", str(tmp_path / "codes.tpk")])
    assert (r.exit_code, r.stderr) == (1, f"tokpack: {tmp_path / 'codes.out.npy'}: already exists (use -f to overwrite)\n")
    r = runner.invoke(app, ["inspect", "--json", str(tmp_path / "codes.tpk")])
    info = json.loads(r.stdout)
    assert info["tokens_only"] and info["model_id"] == "mimi" and info["compression_ratio"] is None
    assert info["frame_rate_hz"] == 12.5 and info["duration_s"] == 40.0 and info["total_frames"] == 500
    r = runner.invoke(app, ["decode", str(tmp_path / "codes.tpk")])
    assert r.exit_code == 1 and "holds tokens only (mimi, from tokpack pack)" in r.stderr
    r = runner.invoke(app, ["decode", "-t", str(tmp_path / "codes.tpk")])
    assert r.exit_code == 0, r.stderr


def test_pack_codes_with_the_generic_prior_unless_told(tmp_path):
    """The default CTX prior of packed tokens is the generic one of their codebook size
    (no model, no file); --prior uniform takes the built-in uniform one."""
    array = (np.random.default_rng(4).zipf(1.3, (4, 3000)) % 1024).astype(np.int64)
    np.save(tmp_path / "codes.npy", array)
    sizes = {}
    for choice in ("default", "generic", "uniform"):
        out = tmp_path / f"{choice}.tpk"
        extra = [] if choice == "default" else ["--prior", choice]
        r = runner.invoke(app, ["pack", str(tmp_path / "codes.npy"), "-K", "1024",
                                "--frame-rate", "75", "-o", str(out), *extra])
        assert r.exit_code == 0, r.stderr
        info = json.loads(runner.invoke(app, ["inspect", "--json", str(out)]).stdout)
        assert info["prior_sha256"] == ("0" * 64 if choice == "uniform"
                                        else prior_files.generic_sha256(1024).hex()), choice
        sizes[choice] = out.stat().st_size
        assert np.array_equal(packing.unpack(out), array)
    assert sizes["default"] == sizes["generic"] < sizes["uniform"]
    r = runner.invoke(app, ["pack", str(tmp_path / "codes.npy"), "-K", "1024", "--frame-rate", "75",
                            "-o", str(tmp_path / "p.tpk"), "-e", "pack", "--prior", "generic"])
    assert r.exit_code == 2 and "--prior is for the CTX coder" in r.stderr
    r = runner.invoke(app, ["pack", str(tmp_path / "codes.npy"), "-K", "1024", "--frame-rate", "75",
                            "-o", str(tmp_path / "p.tpk"), "--prior", str(tmp_path / "none.tpp")])
    assert (r.exit_code, r.stderr) == (2, f"tokpack: --prior {tmp_path / 'none.tpp'}: "
                                          "No such file or directory\n")


def test_pipes_and_torch_files(tmp_path):
    array = np.random.default_rng(3).integers(0, 4096, (2, 4, 30))
    buffer = io.BytesIO()
    np.save(buffer, array)
    pack = subprocess.run([sys.executable, "-m", "tokpack", "pack", "-", "-K", "4096", "--frame-rate", "21.5",
                           "-c"], input=buffer.getvalue(), capture_output=True)
    assert pack.returncode == 0, pack.stderr
    unpack = subprocess.run([sys.executable, "-m", "tokpack", "unpack", "-", "-c"], input=pack.stdout,
                            capture_output=True)
    assert unpack.returncode == 0, unpack.stderr
    assert np.array_equal(np.load(io.BytesIO(unpack.stdout)), array)
    import torch

    torch.save(torch.from_numpy(array), tmp_path / "codes.pt")
    r = runner.invoke(app, ["pack", str(tmp_path / "codes.pt"), "-K", "4096", "--frame-rate", "21.5"])
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(packing.unpack(tmp_path / "codes.tpk"), array)


def test_pack_errors_are_one_line(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[1, 5000]]))
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    cases = [
        (["big.npy", "-K", "2048", "--frame-rate", "75"], 1,
         f"tokpack: {tmp_path / 'big.npy'}: token 5000 at index (0, 1) is outside [0, 2048) (--codebook-size)\n"),
        (["objects.npy", "-K", "2048", "--frame-rate", "75"], 1, None),
        (["big.npy", "-K", "1", "--frame-rate", "75"], 2, "tokpack: --codebook-size 1 is out of range 2..65536\n"),
        (["big.npy", "-K", "2048", "--frame-rate", "0"], 2,
         "tokpack: --frame-rate 0.0 must be a positive number of frames per second\n"),
        (["big.npy", "-K", "2048", "--frame-rate", "12.5", "--sample-rate", "1001"], 2,
         "tokpack: --sample-rate 1001 / --frame-rate 12.5 is not a whole number of samples per frame (1..65536)\n"),
        (["big.npy", "-K", "2048", "--frame-rate", "75", "--codec", "Bad Name"], 2,
         "tokpack: --codec 'Bad Name': 1..32 characters of [a-z0-9_.-]\n"),
    ]
    for args, status, stderr in cases:
        r = runner.invoke(app, ["pack", *(str(tmp_path / a) if a.endswith(".npy") else a for a in args)])
        assert r.exit_code == status, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
        if stderr is not None:
            assert r.stderr == stderr
    assert "not an .npy array: Object arrays cannot be loaded when allow_pickle=False" in runner.invoke(
        app, ["pack", str(tmp_path / "objects.npy"), "-K", "2", "--frame-rate", "1"]).stderr


def test_unpack_reads_every_container_without_torch(tmp_path, test_24khz, signals):
    """A model's container too ([codebooks, frames] for one stream), and no torch import."""
    wav = signals.write(tmp_path / "a.wav", signals.sine(24_000), 24_000)
    from tokpack.codec.engine import encode

    encode(wav, tmp_path / "a.tpk", model=test_24khz)
    code = ("import sys; from tokpack.cli.app import main\n"
            f"sys.argv = ['tokpack', 'unpack', {str(tmp_path / 'a.tpk')!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    tokens = np.load(tmp_path / "a.out.npy")
    assert tokens.dtype == np.uint16 and tokens.shape == (8, 75)


def test_flags_need_version_1_2_and_a_tokens_only_header():
    base = packing.tokens_header((2, 10), 1024, 12.5)
    assert base.flags == spec.Flags.TOKENS_ONLY and base.version_minor == 2
    with pytest.raises(FieldOutOfRange, match="needs version 1.2") as info:
        dataclasses.replace(base, version_minor=1)
    assert info.value.field == "flags"
    with pytest.raises(UnsupportedFeature) as info:
        dataclasses.replace(base, flags=4)
    assert info.value.field == "flags"
    with pytest.raises(FieldOutOfRange, match="STREAM_AXIS needs TOKENS_ONLY"):
        dataclasses.replace(base, flags=spec.Flags.STREAM_AXIS)
    with pytest.raises(FieldOutOfRange, match="source_frames == model_samples"):
        dataclasses.replace(base, source_frames=3)
    assert Header.from_bytes(base.to_bytes()) == base


def test_a_prior_trained_on_packed_tokens(tmp_path):
    """train-prior on tokens-only containers needs no model: neighbour lists come from the
    tokens; packing with the prior is smaller, and unpacking needs it."""
    rng = np.random.default_rng(5)

    def walk(frames):  # codes that move to nearby codes, as frame-to-frame codec tokens do
        return np.cumsum(rng.integers(-2, 3, (4, frames)), axis=1) % 512

    for i in range(4):
        np.save(tmp_path / f"train{i}.npy", walk(2000))
        assert runner.invoke(app, ["pack", "-q", str(tmp_path / f"train{i}.npy"), "-K", "512",
                                   "--frame-rate", "50", "--codec", "toy"]).exit_code == 0
    r = runner.invoke(app, ["train-prior", *(str(tmp_path / f"train{i}.tpk") for i in range(4)),
                            "-o", str(tmp_path / "toy.tpp")])
    assert r.exit_code == 0, r.stderr
    test = walk(3000)
    plain, trained = io.BytesIO(), io.BytesIO()
    packing.pack(test, plain, codebook_size=512, frame_rate=50, codec="toy")
    from tokpack.formats.prior import load

    prior = load(tmp_path / "toy.tpp")
    packing.pack(test, trained, codebook_size=512, frame_rate=50, codec="toy", prior=prior)
    assert len(trained.getvalue()) < 0.9 * len(plain.getvalue())
    from tokpack.errors import PriorNotFound

    with pytest.raises(PriorNotFound):
        packing.unpack(io.BytesIO(trained.getvalue()))
    assert np.array_equal(packing.unpack(io.BytesIO(trained.getvalue()), priors=[prior]), test)
    with pytest.raises(TokensError, match="the prior is for 4 codebook"):
        packing.pack(np.zeros((5, 10), np.int64), io.BytesIO(), codebook_size=512, frame_rate=50, prior=prior)
