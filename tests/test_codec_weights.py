"""Weights: resolution order, the official-weights path (with official-architecture state
dicts in a temporary torch hub cache), hash checks, typed errors, the canonical hash."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import subprocess
import sys
import urllib.error
import warnings

import pytest
import torch

from tokpack.codec import registry, weights
from tokpack.codec.weights import (
    load_model,
    resolve_weights,
    tokpack_cache_dir,
    weights_sha256,
)
from tokpack.errors import ModelError, WeightsNotFound


@pytest.fixture(scope="module")
def official_24k_state():
    """A state dict with exactly the official encodec_24khz keys and shapes (untrained)."""
    import encodec

    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec's deprecated weight_norm
        torch.manual_seed(0)
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    return model.state_dict()


@pytest.fixture(scope="module")
def official_24k_bytes(official_24k_state):
    buf = io.BytesIO()
    torch.save(official_24k_state, buf)
    return buf.getvalue()


@pytest.fixture
def hub(tmp_path, monkeypatch, official_24k_bytes):
    """A temporary TORCH_HOME whose hub cache holds the state dict under a hub-style name
    carrying its real hash prefix; the encodec_24khz spec is pointed at that name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TOKPACK_WEIGHTS", raising=False)
    name = f"encodec_24khz-{hashlib.sha256(official_24k_bytes).hexdigest()[:8]}.th"
    spec = dataclasses.replace(registry.MODELS["encodec_24khz"], checkpoint=name,
                               url=registry.CHECKPOINT_ROOT_URL + name)
    monkeypatch.setitem(registry.MODELS, "encodec_24khz", spec)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return spec, checkpoints / name


def offline(monkeypatch):
    """Make downloads fail at once, the way they do here (the host does not resolve)."""
    calls = []

    def fail(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return calls


def test_official_weights_from_the_hub_cache(hub, official_24k_bytes, official_24k_state):
    spec, path = hub
    path.write_bytes(official_24k_bytes)
    assert resolve_weights(spec) == path
    loaded = load_model("encodec_24khz")
    assert loaded.weights_path == path
    assert loaded.spec is spec
    assert not loaded.model.training
    assert loaded.weights_sha256 == weights_sha256(official_24k_state)


def test_explicit_weights_path_wins(hub, tmp_path, official_24k_bytes, monkeypatch):
    spec, _ = hub
    mine = tmp_path / "my.th"
    mine.write_bytes(official_24k_bytes)
    other = tmp_path / "other.th"
    other.write_bytes(official_24k_bytes)
    monkeypatch.setenv("TOKPACK_WEIGHTS", str(other))
    assert resolve_weights(spec, mine) == mine
    assert load_model("encodec_24khz", weights=mine).weights_path == mine


def test_tokpack_weights_env(hub, tmp_path, official_24k_bytes, monkeypatch):
    spec, _ = hub
    env = tmp_path / "env.th"
    env.write_bytes(official_24k_bytes)
    monkeypatch.setenv("TOKPACK_WEIGHTS", str(env))
    assert resolve_weights(spec) == env
    assert load_model("encodec_24khz").weights_path == env


def test_missing_explicit_file(hub, tmp_path):
    spec, _ = hub
    with pytest.raises(WeightsNotFound) as err:
        resolve_weights(spec, tmp_path / "nope.th")
    assert "does not exist (given by --weights)" in str(err.value)


def test_offline_and_not_cached(hub, monkeypatch):
    spec, path = hub
    calls = offline(monkeypatch)
    with pytest.raises(WeightsNotFound) as err:
        load_model("encodec_24khz")
    message = str(err.value)
    assert calls == [spec.url]
    assert "\n" not in message
    for part in ("encodec_24khz", spec.checkpoint, spec.url, str(path), "--weights",
                 "TOKPACK_WEIGHTS", "Name or service not known"):
        assert part in message, part
    assert not any(path.parent.iterdir())  # no partial file left behind


def test_offline_message_for_the_real_checkpoint(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    offline(monkeypatch)
    with pytest.raises(WeightsNotFound) as err:
        load_model("encodec_48khz")
    want = tmp_path / "hub" / "checkpoints" / "encodec_48khz-7e698e3e.th"
    assert str(err.value) == (
        "weights for model encodec_48khz not found: encodec_48khz-7e698e3e.th is not cached "
        "and could not be downloaded from "
        "https://dl.fbaipublicfiles.com/encodec/v0/encodec_48khz-7e698e3e.th "
        f"(Name or service not known); put the file at {want}, or pass --weights PATH, "
        "or set TOKPACK_WEIGHTS=PATH"
    )


def test_download_lands_in_the_hub_cache(hub, monkeypatch, official_24k_bytes):
    spec, path = hub
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, hash_prefix=hash_prefix, progress=progress)
        with open(dst, "wb") as f:
            f.write(official_24k_bytes)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert load_model("encodec_24khz").weights_path == path
    assert seen == dict(url=spec.url, dst=str(path), hash_prefix=spec.checkpoint[14:22],
                        progress=False)


def test_hash_prefix_mismatch_in_cache(hub, official_24k_bytes):
    spec, path = hub
    path.write_bytes(official_24k_bytes + b"tampered")
    with pytest.raises(ModelError) as err:
        load_model("encodec_24khz")
    assert "its name promises" in str(err.value)
    assert err.value.path == str(path)


def test_checks_run_once_per_version_of_a_file(hub, official_24k_bytes, official_24k_state,
                                               monkeypatch):
    """The hash a hub name promises, NaN/inf and the weights hash: once per version of a
    file (remembered in the cache); a changed file is checked again."""
    spec, path = hub
    path.write_bytes(official_24k_bytes)
    first = load_model("encodec_24khz").weights_sha256
    checked = []
    monkeypatch.setattr(weights, "check_hash_in_name", checked.append)
    assert load_model("encodec_24khz").weights_sha256 == first
    assert checked == []
    state = dict(official_24k_state)
    key = "decoder.model.0.conv.conv.bias"
    state[key] = state[key].clone()
    state[key][0] = float("nan")
    torch.save(state, path)
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_model("encodec_24khz")
    assert checked == [path]


def test_wrong_architecture(hub, tmp_path):
    import encodec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        state = encodec.EncodecModel.encodec_model_48khz(pretrained=False).state_dict()
    wrong = tmp_path / "wrong.th"
    torch.save(state, wrong)
    with pytest.raises(ModelError) as err:
        load_model("encodec_24khz", weights=wrong)
    message = str(err.value)
    assert "do not fit the encodec_24khz architecture" in message
    assert "missing key(s)" in message and "unexpected key(s)" in message
    assert "wrong shape" in message
    assert len(message) < 1000


def test_not_a_state_dict(tmp_path):
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot load weights"):
        load_model("test_24khz", weights=junk)
    torch.save([1, 2, 3], junk)
    with pytest.raises(ModelError, match="not a state dict"):
        load_model("test_24khz", weights=junk)


def test_weights_sha256_ignores_serialization(official_24k_state, tmp_path):
    reordered = dict(reversed(list(official_24k_state.items())))
    legacy = tmp_path / "legacy.th"
    torch.save(reordered, legacy, _use_new_zipfile_serialization=False)
    reloaded = torch.load(legacy, weights_only=True)
    assert weights_sha256(reloaded) == weights_sha256(official_24k_state)
    changed = dict(official_24k_state)
    key = "decoder.model.0.conv.conv.bias"
    changed[key] = changed[key].clone()
    changed[key][0] += 1e-6
    assert weights_sha256(changed) != weights_sha256(official_24k_state)
    assert weights_sha256({"a": torch.zeros(2, 3)}) != weights_sha256({"a": torch.zeros(3, 2)})
    assert weights_sha256({"a": torch.zeros(2)}) != weights_sha256(
        {"a": torch.zeros(2, dtype=torch.float64)})


def test_test_model_is_cached_and_loaded_like_official(test_24khz, tokpack_cache):
    path = test_24khz.weights_path
    assert path.parent.parent == tokpack_cache
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.name == f"test_24khz-{digest[:8]}.th"
    again = load_model("test_24khz")
    assert again.weights_path == path
    assert again.weights_sha256 == test_24khz.weights_sha256
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert weights_sha256(state) == test_24khz.weights_sha256


def test_cache_dirs_follow_torch(tmp_path):
    """Our hub dir, computed without torch, equals torch.hub.get_dir() for each env."""
    code = f"""
import os, sys
from tokpack.codec.weights import torch_hub_dir
cases = [{{}}, {{"XDG_CACHE_HOME": "{tmp_path}/xdg"}}, {{"TORCH_HOME": "~/th"}},
         {{"TORCH_HOME": "{tmp_path}/th", "XDG_CACHE_HOME": "{tmp_path}/xdg"}}]
base = {{k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}}
def run(f):
    out = []
    for case in cases:
        os.environ.clear(); os.environ.update(base); os.environ.update(case)
        out.append(str(f()))
    return out
ours = run(torch_hub_dir)
assert "torch" not in sys.modules
import torch.hub
print(ours == run(torch.hub.get_dir), ours == run(torch_hub_dir))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_tokpack_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKPACK_CACHE", str(tmp_path / "c"))
    assert tokpack_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TOKPACK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert tokpack_cache_dir() == tmp_path / "x" / "tokpack"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(tokpack_cache_dir()) == os.path.expanduser("~/.cache/tokpack")


def test_device_choice(test_24khz):
    assert weights.resolve_device("cpu") == "cpu"
    assert weights.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="not supported|unknown device"):
        weights.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_model("test_24khz", device="cuda")
