"""EnCodec's LM as an entropy coder: weights resolution (official-architecture LM state
dicts with random weights in a temporary torch hub cache), round trips, and equality with
the bytes encodec.compress writes for the same codes and LM."""

from __future__ import annotations

import hashlib
import io
import struct
import sys
import urllib.error

import numpy as np
import pytest
import torch

from tokpack.codecs.encodec import lm as lm_mod
from tokpack.codecs.encodec.lm import (
    LMDecoder,
    LMEncoder,
    lm_available,
    lm_decode,
    lm_encode,
    load_lm,
    resolve_lm_weights,
)
from tokpack.codec.registry import CHECKPOINT_ROOT_URL, get_spec
from tokpack.codec.weights import weights_sha256
from tokpack.errors import FormatError, ModelError, Truncated, WeightsNotFound


def official_lm_state(name: str, seed: int) -> dict:
    """An LM state dict as encodec's get_lm_model builds the network (random weights)."""
    from encodec.model import LMModel

    spec = get_spec(name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        lm = LMModel(spec.max_codebooks, 1024, num_layers=5, dim=200,
                     past_context=int(3.5 * spec.frame_rate))
    return lm.state_dict()


@pytest.fixture(scope="session")
def lm_files(tmp_path_factory):
    """name -> (bytes of a random official-architecture LM file, its state dict)."""
    out = {}
    for seed, name in enumerate(("encodec_24khz", "encodec_48khz")):
        state = official_lm_state(name, seed)
        buf = io.BytesIO()
        torch.save(state, buf)
        out[name] = (buf.getvalue(), state)
    return out


def offline(monkeypatch) -> list:
    calls = []

    def fail(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return calls


@pytest.fixture
def lm_hub(tmp_path, monkeypatch, lm_files):
    """A temporary torch hub cache holding each random LM twice: under encodec's own
    name (encodec's get_lm_model finds it there: torch hub checks hashes only when it
    downloads), and under a name carrying its true hash, which tokpack is pointed at
    (tokpack checks the hash a name promises). Downloads fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TOKPACK_LM_WEIGHTS", raising=False)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    paths = {}
    for name, (data, _) in lm_files.items():
        official = checkpoints / lm_mod.LM_CHECKPOINTS[name]
        official.write_bytes(data)
        ours = f"{official.name.rsplit('-', 1)[0]}-{hashlib.sha256(data).hexdigest()[:8]}.th"
        (checkpoints / ours).hardlink_to(official)
        monkeypatch.setitem(lm_mod.LM_CHECKPOINTS, name, ours)
        paths[name] = checkpoints / ours
    offline(monkeypatch)
    return paths


def test_official_lm_from_the_hub_cache(lm_hub, lm_files):
    for name, path in lm_hub.items():
        assert lm_available(name)
        assert resolve_lm_weights(name) == path
        loaded = load_lm(name)
        assert loaded.weights_path == path
        assert loaded.weights_sha256 == weights_sha256(lm_files[name][1])
        assert loaded.max_codebooks == get_spec(name).max_codebooks
        assert load_lm(name) is loaded  # once per process


def test_explicit_path_and_env(lm_hub, tmp_path, monkeypatch, lm_files):
    mine = tmp_path / "mine.th"
    mine.write_bytes(lm_files["encodec_24khz"][0])
    env = tmp_path / "env.th"
    env.write_bytes(lm_files["encodec_24khz"][0])
    monkeypatch.setenv("TOKPACK_LM_WEIGHTS", str(env))
    assert resolve_lm_weights("encodec_24khz", mine) == mine
    assert resolve_lm_weights("encodec_24khz") == env
    with pytest.raises(WeightsNotFound, match=r"does not exist \(given by --lm-weights\)"):
        resolve_lm_weights("encodec_24khz", tmp_path / "nope.th")


def test_absent_lm_is_a_typed_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("TOKPACK_LM_WEIGHTS", raising=False)
    calls = offline(monkeypatch)
    assert not lm_available("encodec_48khz")
    assert calls == []  # lm_available never downloads
    want = tmp_path / "hub" / "checkpoints" / "encodec_lm_48khz-7add9fc3.th"
    with pytest.raises(WeightsNotFound) as err:
        load_lm("encodec_48khz")
    assert str(err.value) == (
        "LM weights for model encodec_48khz not found: encodec_lm_48khz-7add9fc3.th is not "
        "cached and could not be downloaded from "
        f"{CHECKPOINT_ROOT_URL}encodec_lm_48khz-7add9fc3.th (Name or service not known); "
        f"put the file at {want}, or pass --lm-weights PATH, or set TOKPACK_LM_WEIGHTS=PATH"
    )
    assert calls == [CHECKPOINT_ROOT_URL + "encodec_lm_48khz-7add9fc3.th"]


def test_wrong_architecture(lm_files, tmp_path):
    wrong = tmp_path / "lm48.th"
    wrong.write_bytes(lm_files["encodec_48khz"][0])
    with pytest.raises(ModelError, match="do not fit the encodec_24khz LM architecture"):
        load_lm("encodec_24khz", wrong)


def test_test_models_have_a_built_lm(tokpack_cache):
    assert lm_available("test_48khz")
    loaded = load_lm("test_48khz")
    assert loaded.weights_path.parent.parent == tokpack_cache
    assert loaded.weights_path.name.startswith("test_48khz_lm-")
    assert loaded.max_codebooks == 16


@pytest.mark.parametrize("k,t", [(1, 0), (1, 1), (4, 30), (16, 12)])
def test_round_trip(k, t):
    rng = np.random.default_rng(k * 100 + t)
    codes = rng.integers(0, 1024, (k, t), dtype=np.uint16)
    codes[:, ::3] = 7  # some repetition
    data = lm_encode("test_48khz", codes)
    assert (data == b"") == (t == 0)
    back = lm_decode("test_48khz", data, k, t)
    assert back.dtype == np.uint16 and np.array_equal(back, codes)


def test_streaming_objects_match_one_shot():
    loaded = load_lm("test_48khz")
    codes = np.random.default_rng(5).integers(0, 1024, (4, 25))
    fo = io.BytesIO()
    enc = LMEncoder(loaded, fo, 4)
    for a in range(0, 25, 7):
        enc.write(codes[:, a:a + 7])
    enc.flush()
    assert fo.getvalue() == lm_encode(loaded, codes)
    # a decoder reads exactly the run, so what follows it stays readable
    src = io.BytesIO(fo.getvalue() + b"next")
    dec = LMDecoder(loaded, src, 4)
    assert np.array_equal(np.concatenate([dec.read(10), dec.read(15)], axis=1), codes)
    assert src.read() == b"next"


def test_damaged_runs_are_typed_errors():
    codes = np.random.default_rng(1).integers(0, 1024, (4, 20))
    data = lm_encode("test_48khz", codes)
    with pytest.raises(Truncated, match="end after"):
        lm_decode("test_48khz", data[:-3], 4, 20)
    with pytest.raises(FormatError, match="2 bytes left over after 20 LM-coded frames"):
        lm_decode("test_48khz", data + b"xy", 4, 20)
    rng = np.random.default_rng(2)
    for _ in range(5):  # noise decodes to something or fails cleanly
        junk = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        try:
            lm_decode("test_48khz", junk, 4, 20)
        except FormatError:
            pass
    with pytest.raises(ValueError, match="n_codebooks must be 1..16"):
        lm_encode("test_48khz", np.zeros((17, 2), np.uint16))
    with pytest.raises(ValueError, match="codes must be in 0..1023"):
        lm_encode("test_48khz", np.full((2, 2), 1024))


@pytest.mark.parametrize("name,test_model,seconds", [("encodec_24khz", "test_24khz", 0.6),
                                                    ("encodec_48khz", "test_48khz", 1.0)])
def test_same_bytes_as_encodec_compress(lm_hub, name, test_model, seconds, request, signals):
    """encodec.compress(use_lm=True), its LM loaded by its own get_lm_model from the hub
    cache, on the test model's network under the official name: its coded segments are
    lm_encode's bytes for the same codes, and tokpack's .ecdc writer gives the whole file."""
    import encodec.compress  # noqa: F401  (the module, which the package's function hides)

    from tokpack.codec.engine import encode
    from tokpack.codec.weights import load_model

    compress = sys.modules["encodec.compress"]
    loaded = load_model(name, weights=request.getfixturevalue(test_model).weights_path)
    spec = loaded.spec
    model = loaded.model
    model.set_target_bandwidth(6.0)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = signals.chirp(int(seconds * spec.sample_rate), rate=spec.sample_rate,
                          channels=spec.channels)
        wav = torch.from_numpy(x.T.copy())
        with torch.random.fork_rng():  # get_lm_model seeds the global RNG
            ref = compress.compress(model, wav, use_lm=True)
        with torch.no_grad():
            frames = model.encode(wav[None])
        out = io.BytesIO()
        encode(signals.wav_bytes(x, spec.sample_rate), out, model=loaded, container="ecdc",
               coder="encodec-lm", threads=1)
    finally:
        torch.set_num_threads(old_threads)
    assert out.getvalue() == ref
    from encodec.binary import read_ecdc_header

    fo = io.BytesIO(ref)
    assert read_ecdc_header(fo) == {"m": name, "al": x.shape[0], "nc": spec.n_codebooks(6.0),
                                    "lm": True}
    body = b"".join((b"" if scale is None else struct.pack("!f", scale.item()))
                    + lm_encode(name, codes[0].numpy()) for codes, scale in frames)
    assert fo.read() == body
    assert len(frames) == (2 if spec.segmented else 1)
