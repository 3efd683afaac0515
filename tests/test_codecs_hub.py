"""Official Mimi/DAC weights resolve as a Hugging Face user expects: the HF cache
(HF_HOME), --weights DIR|FILE, else a download; offline and not cached: one line naming
the repository. The files placed where the real ones go are test models' state dicts of
the official architecture (the real weights cannot be downloaded here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from tokpack.codec.registry import get_spec  # noqa: E402
from tokpack.codec.weights import hf_cached_file, hf_hub_cache, load_model, resolve_weights  # noqa: E402
from tokpack.errors import ModelError, WeightsNotFound  # noqa: E402


def tokpack(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokpack", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def place_in_hf_cache(home: Path, repo_id: str, source: Path, revision: str = "0123abcd") -> Path:
    """``source`` as the revision ``main`` of ``repo_id`` in an HF cache at ``home``, laid
    out as huggingface_hub lays it out (blob, snapshot link, refs/main)."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / "f00d"
    shutil.copyfile(source, blob)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot / "model.safetensors"


@pytest.mark.parametrize("model, repo", [("mimi", "kyutai/mimi"), ("dac_44khz", "descript/dac_44khz")])
def test_offline_official_weights_fail_in_one_line(tmp_path, signals, model, repo):
    wav = signals.write(tmp_path / "x.wav", signals.sine(4800), 24_000)
    r = tokpack("encode", str(wav), "-m", model, env={"HF_HOME": str(tmp_path / "hf"),
                                                      "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert repo in lines[0] and "model.safetensors" in lines[0] and "--weights" in lines[0]
    assert "HF_HUB_OFFLINE" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "x.tpk").exists()


def test_a_failed_download_is_one_typed_error(monkeypatch, tmp_path):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot find the requested files")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsNotFound) as err:
        resolve_weights(get_spec("mimi"))
    text = str(err.value)
    assert "\n" not in text and "kyutai/mimi/model.safetensors" in text
    assert "the Hub could not be reached" in text and "hf download kyutai/mimi" in text


def test_weights_found_in_the_hf_cache_and_by_option(test_mimi, monkeypatch, tmp_path):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    spec = get_spec("mimi")
    assert hf_cached_file("kyutai/mimi", "model.safetensors") is None
    placed = place_in_hf_cache(home, "kyutai/mimi", test_mimi.weights_path)
    assert hf_hub_cache() == home / "hub"
    assert resolve_weights(spec) == placed
    official = load_model("mimi")
    assert official.spec.name == "mimi"
    assert official.weights_sha256 == test_mimi.weights_sha256  # the same tensors, hashed alike
    # --weights DIR (a folder holding model.safetensors) and --weights FILE
    assert resolve_weights(spec, placed.parent) == placed.parent / "model.safetensors"
    assert load_model("mimi", weights=test_mimi.weights_path).weights_sha256 == official.weights_sha256
    with pytest.raises(WeightsNotFound, match="the folder has no model.safetensors"):
        resolve_weights(spec, tmp_path)


def test_weights_of_another_architecture_are_refused(test_mimi, test_dac_44khz, tmp_path):
    with pytest.raises(ModelError, match="do not fit the dac_44khz architecture"):
        load_model("dac_44khz", weights=test_mimi.weights_path)
    not_safetensors = tmp_path / "model.safetensors"
    not_safetensors.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model("mimi", weights=not_safetensors)


def test_models_lists_cached_hub_weights(test_dac_44khz, tmp_path):
    home = tmp_path / "hf"
    place_in_hf_cache(home, "descript/dac_44khz", test_dac_44khz.weights_path)
    r = tokpack("models", "--json", env={"HF_HOME": str(home)})
    import json

    here = {row["model"]: row["weights_here"] for row in map(json.loads, r.stdout.splitlines())}
    assert here["dac_44khz"] is True and here["mimi"] is False


def test_dac_16khz_runs_on_weights_of_its_architecture(tmp_path, signals):
    """The official DAC 16 kHz model (hop 320, 12 codebooks), on a state dict of its
    architecture (transformers' random initialisation) given as --weights FILE."""
    import tokpack
    from tokpack.codecs.dac.model import build_model, official_config
    from tokpack.codecs.hf import save_state

    path = tmp_path / "model.safetensors"
    path.write_bytes(save_state(build_model(official_config("dac_16khz")).state_dict()))
    loaded = load_model("dac_16khz", weights=tmp_path)  # the folder
    assert loaded.weights_path == path
    x = signals.chirp(16_000 + 7, 16_000)
    enc = tokpack.encode_array(x, 16_000, loaded)
    assert enc.tokens.shape == (1, 12, -(-(16_000 + 7) // 320))
    y, rate = tokpack.decode_tokens(enc, model=loaded)
    assert (y.shape, rate) == ((16_007, 1), 16_000)


def test_checks_run_once_per_version_of_a_weights_file(test_dac_44khz, tmp_path, monkeypatch):
    """NaN/inf and the weights hash of a transformers model's file: once per version of the
    file (remembered in the cache); a changed file is checked again."""
    import torch
    from safetensors.torch import load_file

    from tokpack.codec import weights
    from tokpack.codecs.hf import save_state

    path = tmp_path / "model.safetensors"
    shutil.copyfile(test_dac_44khz.weights_path, path)
    first = load_model("dac_44khz", weights=path).weights_sha256
    assert first == test_dac_44khz.weights_sha256
    hashed, scanned = [], []
    monkeypatch.setattr(weights, "weights_sha256", lambda state: hashed.append(len(state)) or bytes(32))
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: scanned.append(t.numel()) or isfinite(t))
    assert load_model("dac_44khz", weights=path).weights_sha256 == first  # remembered
    assert hashed == [] and scanned == []
    state = load_file(path)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes(save_state(state))
    os.replace(changed, path)  # another version of the file at the same path
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_model("dac_44khz", weights=path)
    state[key] = torch.zeros_like(state[key])
    changed.write_bytes(save_state(state))
    os.replace(changed, path)
    assert load_model("dac_44khz", weights=path).weights_sha256 == bytes(32)  # hashed again
    assert len(hashed) == 1 and scanned
