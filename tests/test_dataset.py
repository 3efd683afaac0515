"""tokpack dataset encode: inputs, shards, resume, engines, reading back (tokpack.dataset)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tokpack.cli import app
from tokpack.dataset import encode_dataset, iter_tokens
from tokpack.dataset import shards as sh
from tokpack.dataset.inputs import Item, plan_inputs
from tokpack.errors import OutputError, UsageError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

#: corpus files for the dataset runs: short real audio, edge cases, every malformed file
CORPUS_FILES = [
    "edge/10ms_24k.wav", "edge/one_sample_24k.wav", "edge/empty_0_samples_24k.wav",
    "edge/dc_offset_3s_24k.wav", "variants/ch2_stereo_48k.wav",
    "malformed/bad_fmt_chunk.wav", "malformed/data_size_ffffffff.wav",
    "malformed/random_bytes.wav", "malformed/text_renamed.wav",
    "malformed/truncated_data.wav", "malformed/zero_bytes.wav",
]
FAILING = {"malformed/bad_fmt_chunk.wav", "malformed/random_bytes.wav",
           "malformed/text_renamed.wav", "malformed/zero_bytes.wav"}


@pytest.fixture(scope="module")
def corpus_tree(corpus_dir, tmp_path_factory) -> Path:
    """A folder of corpus files (links), in their corpus subfolders."""
    root = tmp_path_factory.mktemp("dataset-in")
    for name in CORPUS_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(corpus_dir / name, root / name)
    return root


def _rows(outdir: Path) -> list[dict]:
    return [row for path in sh.list_shards(outdir, sh.PARQUET) for row in sh.iter_rows(path)]


def _tokens(outdir) -> dict[str, np.ndarray]:
    return {key: tokens for key, tokens, _ in iter_tokens(outdir)}


@pytest.fixture(scope="module")
def local_parquet(corpus_tree, tmp_path_factory, test_24khz) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("local") / "ds"
    result = encode_dataset([str(corpus_tree)], out, model="test_24khz", jobs=1, shard_rows=4)
    return out, result


# ---- inputs -------------------------------------------------------------------------


def test_inputs_keys_from_folders_files_and_manifests(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/x.wav", "a/sub/y.flac", "a/notes.txt", "z.wav", "m1.wav", "m2.wav"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# a comment\nm1.wav\n\n" + str(tmp_path / "m2.wav") + "\n")
    (tmp_path / "list.csv").write_text("path,key,text\nm1.wav,first,hello\n")
    (tmp_path / "list.jsonl").write_text(json.dumps({"audio_filepath": "m2.wav", "duration": 1}) + "\n")
    items = plan_inputs([str(tmp_path / "a"), str(tmp_path / "z.wav")])
    assert items == sorted([Item("x.wav", str(tmp_path / "a/x.wav")), Item("sub/y.flac", str(tmp_path / "a/sub/y.flac")),
                            Item("z.wav", str(tmp_path / "z.wav"))])
    txt = plan_inputs([str(tmp_path / "list.txt")])
    assert [(i.key, i.source) for i in txt] == [("m1.wav", str(tmp_path / "m1.wav")),
                                                (str(tmp_path / "m2.wav").lstrip("/"), str(tmp_path / "m2.wav"))]
    assert plan_inputs([str(tmp_path / "list.csv")]) == [Item("first", str(tmp_path / "m1.wav"))]
    assert plan_inputs([str(tmp_path / "list.jsonl")]) == [Item("m2.wav", str(tmp_path / "m2.wav"))]


def test_inputs_usage_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"")
    (tmp_path / "b" / "x.wav").write_bytes(b"")
    with pytest.raises(UsageError, match="both have the key 'x.wav'"):
        plan_inputs([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(UsageError, match="no such file"):
        plan_inputs([str(tmp_path / "missing.wav")])
    (tmp_path / "bad.csv").write_text("name,size\nx.wav,1\n")
    with pytest.raises(UsageError, match="names no path column"):
        plan_inputs([str(tmp_path / "bad.csv")])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UsageError, match="bad.jsonl:1: not JSON"):
        plan_inputs([str(tmp_path / "bad.jsonl")])


def test_webdataset_keys_have_no_dots_and_never_collide():
    keys = ["a.wav", "a_wav", "dir.v2/b.c.flac", "ü.wav", "x"]
    safe = sh.webdataset_keys(keys)
    assert len(set(safe.values())) == len(keys)
    assert all("." not in name for name in safe.values())
    assert safe["x"] == "x" and safe["ü.wav"] == "ü_wav" and safe["dir.v2/b.c.flac"] == "dir_v2/b_c_flac"
    assert safe["a.wav"] != "a_wav" and safe["a.wav"].startswith("a_wav_")  # collided: hashed


# ---- a local run ----------------------------------------------------------------------


def test_local_run_rows_statuses_and_schema(local_parquet, corpus_tree):
    out, result = local_parquet
    rows = _rows(out)
    assert [r["key"] for r in rows] == sorted(CORPUS_FILES)  # input order, one row per key
    assert {r["key"] for r in rows if r["status"] == "failed"} == FAILING
    assert (result.ok, result.failed, result.already_ok) == (len(CORPUS_FILES) - len(FAILING), len(FAILING), 0)
    assert [sh.list_shards(out, sh.PARQUET)[i].name for i in range(3)] == [
        "shard-0001-00000.parquet", "shard-0001-00001.parquet", "shard-0001-00002.parquet"]
    for path in sh.list_shards(out, sh.PARQUET):
        table = pq.read_table(path)
        assert table.schema.equals(sh.arrow_schema())
        assert table.num_rows <= 4
    by_key = {r["key"]: r for r in rows}
    stereo = by_key["variants/ch2_stereo_48k.wav"]
    assert stereo["model"] == "test_24khz" and stereo["sample_rate"] == 48_000 and stereo["channels"] == 2
    assert stereo["duration_s"] == pytest.approx(3.0) and stereo["frame_rate"] == 75.0
    assert stereo["n_frames"] == 225 and stereo["bytes"] == len(stereo["tpk"])
    assert stereo["source"] == str(corpus_tree / "variants/ch2_stereo_48k.wav")
    empty = by_key["edge/empty_0_samples_24k.wav"]
    assert empty["status"] == "ok" and empty["n_frames"] == 0
    assert "Format not recognised" in by_key["malformed/random_bytes.wav"]["error"]
    assert by_key["malformed/zero_bytes.wav"]["tpk"] is None
    manifest = json.loads((out / sh.MANIFEST).read_text())
    assert manifest["counts"] == {"ok": 7, "failed": 4, "shards": 3}
    assert [f["key"] for f in manifest["failures"]] == sorted(FAILING)
    assert manifest["settings"]["model"] == "test_24khz"


def test_every_ok_container_passes_decode_t(local_parquet, tmp_path):
    out, _ = local_parquet
    files = []
    for row in _rows(out):
        if row["status"] == "ok":
            files.append(tmp_path / (row["key"].replace("/", "_") + ".tpk"))
            files[-1].write_bytes(row["tpk"])
    result = CliRunner().invoke(app, ["decode", "-t", *map(str, files)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count(": OK (") == len(files) == 7


def test_tokens_equal_a_plain_encode(local_parquet, corpus_tree, tmp_path):
    import tokpack
    from tokpack.formats import read_container

    out, _ = local_parquet
    src = corpus_tree / "edge/dc_offset_3s_24k.wav"
    tokpack.encode(src, tmp_path / "x.tpk", model="test_24khz", threads=1)
    row = next(r for r in _rows(out) if r["key"] == "edge/dc_offset_3s_24k.wav")
    assert row["tpk"] == (tmp_path / "x.tpk").read_bytes()
    assert np.array_equal(_tokens(out)["edge/dc_offset_3s_24k.wav"], read_container(tmp_path / "x.tpk").tokens)


# ---- resume ---------------------------------------------------------------------------


def test_rerun_encodes_only_what_is_not_ok_and_supersedes_failed_rows(local_parquet, corpus_tree, tmp_path, signals):
    out = tmp_path / "ds"
    shutil.copytree(local_parquet[0], out)
    before = {r["key"]: r["tpk"] for r in _rows(out) if r["status"] == "ok"}
    extra = tmp_path / "extra"
    extra.mkdir()
    signals.write(extra / "new.wav", signals.sine(12_000), 24_000)
    again = encode_dataset([str(corpus_tree), str(extra / "new.wav")], out, model="test_24khz", jobs=1, shard_rows=4)
    assert (again.ok, again.failed, again.already_ok) == (1, 4, 7)
    rows = _rows(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == len(CORPUS_FILES) + 1  # the failed rows were replaced
    assert {r["key"]: r["tpk"] for r in rows if r["status"] == "ok" and r["key"] in before} == before
    names = [p.name for p in sh.list_shards(out, sh.PARQUET)]
    assert "shard-0002-00000.parquet" in names  # this run's generation
    assert not list(out.glob(".*.tmp"))
    third = encode_dataset([str(corpus_tree), str(extra / "new.wav")], out, model="test_24khz", jobs=1, shard_rows=4)
    assert (third.ok, third.failed, third.already_ok) == (0, 4, 8)
    assert sorted(r["key"] for r in _rows(out)) == sorted(keys)


def test_rerun_with_other_options_is_refused(local_parquet, corpus_tree, tmp_path):
    out, _ = local_parquet
    with pytest.raises(UsageError, match=r"other options: bandwidth None \(asked: 12.0\)"):
        encode_dataset([str(corpus_tree)], out, model="test_24khz", bandwidth=12)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(sh.list_shards(out, sh.PARQUET)[0], other)  # shards without a manifest
    with pytest.raises(UsageError, match="holds parquet shards; use another folder"):
        encode_dataset([str(corpus_tree)], other, model="test_24khz", format="webdataset")


def test_one_run_at_a_time(tmp_path, signals):
    signals.write(tmp_path / "a.wav", signals.sine(2400), 24_000)
    out = tmp_path / "ds"
    out.mkdir()
    with open(out / sh.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="another tokpack run is writing this folder"):
            encode_dataset([str(tmp_path / "a.wav")], out, model="test_24khz", jobs=1)
    assert not sh.list_shards(out, sh.PARQUET)


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_killed_run_leaves_no_partial_shard_and_a_rerun_completes(engine, tmp_path, signals, test_24khz):
    """SIGKILL of the driver in the middle of a run, then a rerun."""
    if engine == "ray":
        pytest.importorskip("ray.data")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        signals.write(src / f"f{i:02d}.wav", signals.chirp(24_000 + 977 * i, f0=100 + 50 * i), 24_000)
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "tokpack", "dataset", "encode", str(src), "-o", str(out),
            "-m", "test_24khz", "--shard-size", "1", "-j", "1", "--engine", engine]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(sh.list_shards(out, sh.PARQUET)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(sh.list_shards(out, sh.PARQUET))
    assert 3 <= done < 16
    rerun = subprocess.run([*args, "--json"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["already_ok"] >= done and report["ok"] + report["already_ok"] == 16
    keys = [r["key"] for r in _rows(out)]
    assert sorted(keys) == [f"f{i:02d}.wav" for i in range(16)]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for path in sh.list_shards(out, sh.PARQUET):
        pq.read_table(path)  # every shard under a final name is whole


# ---- WebDataset -----------------------------------------------------------------------


def test_webdataset_shards_read_with_tarfile(corpus_tree, tmp_path, local_parquet):
    out = tmp_path / "wds"
    result = encode_dataset([str(corpus_tree)], out, model="test_24khz", jobs=1, shard_rows=4,
                            format="webdataset")
    assert (result.ok, result.failed) == (7, 4)
    members = []
    for path in sh.list_shards(out, sh.WEBDATASET):
        with tarfile.open(path) as tar:
            members += tar.getnames()
    assert members[:2] == ["edge/10ms_24k_wav.tpk", "edge/10ms_24k_wav.json"]
    assert len(members) == 14 and all("." not in Path(m).stem for m in members)
    manifest = json.loads((out / sh.MANIFEST).read_text())
    assert [f["key"] for f in manifest["failures"]] == sorted(FAILING)
    parquet_tokens = _tokens(local_parquet[0])
    wds_tokens = _tokens(out)
    assert wds_tokens.keys() == parquet_tokens.keys()
    assert all(np.array_equal(wds_tokens[k], parquet_tokens[k]) for k in wds_tokens)
    meta = next(m for k, _, m in iter_tokens(out) if k == "variants/ch2_stereo_48k.wav")
    assert meta["n_frames"] == 225 and meta["status"] == "ok"


# ---- reading back -----------------------------------------------------------------------


def test_iter_tokens_shapes_and_failed_rows(local_parquet):
    out, _ = local_parquet
    seen = {key: (tokens, meta) for key, tokens, meta in iter_tokens(out)}
    assert len(seen) == 7
    tokens, meta = seen["variants/ch2_stereo_48k.wav"]
    assert tokens.dtype == np.uint16 and tokens.shape == (1, meta["n_codebooks"], 225)
    failed = [key for key, tokens, _ in iter_tokens(out, with_failed=True) if tokens is None]
    assert sorted(failed) == sorted(FAILING)


def test_iter_tokens_does_not_import_torch(local_parquet):
    code = ("import sys; from tokpack.dataset import iter_tokens; "
            f"n = sum(1 for _ in iter_tokens({str(local_parquet[0])!r})); "
            "print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["7", "False"]


def test_token_dataset_splits_shards_across_workers(local_parquet):
    import torch

    from tokpack.dataset import TokenDataset

    out, _ = local_parquet
    dataset = TokenDataset(out)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    keys = [key for key, tokens, meta in loader]
    assert sorted(keys) == sorted(_tokens(out))  # every row once, shards split between workers
    key, tokens, meta = next(iter(TokenDataset(sh.list_shards(out, sh.PARQUET)[1:2])))
    assert tokens.dtype == torch.int64 and tokens.shape[2] == meta["n_frames"]


def test_token_dataset_splits_by_rank(local_parquet, monkeypatch):
    from tokpack.dataset import TokenDataset

    out, _ = local_parquet
    monkeypatch.setenv("WORLD_SIZE", "2")
    per_rank = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        per_rank.append({key for key, _, _ in TokenDataset(out)})
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == set(_tokens(out))


def test_hugging_face_datasets_reads_the_shards(local_parquet, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, _ = local_parquet
    files = [str(p) for p in sh.list_shards(out, sh.PARQUET)]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == len(CORPUS_FILES)
    rows = {r["key"]: r for r in _rows(out)}
    for record in ds:
        assert record["tpk"] == rows[record["key"]]["tpk"] and record["status"] == rows[record["key"]]["status"]


# ---- the command ------------------------------------------------------------------------


def test_cli_json_summary_and_exit_status(corpus_tree, tmp_path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["dataset", "encode", str(corpus_tree), "-o", str(out),
                                      "-m", "test_24khz", "-j", "1", "--json"])
    assert result.exit_code == 1  # some inputs failed, as for batch
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1
    assert (report["ok"], report["failed"], report["inputs"], report["shards_written"]) == (7, 4, 11, 1)
    assert sorted(f["key"] for f in report["failures"]) == sorted(FAILING)
    lines = result.stderr.splitlines()
    assert f"tokpack: {corpus_tree / 'malformed/zero_bytes.wav'}: cannot read audio: Format not recognised" in lines
    assert lines[-1].startswith(f"tokpack: {out}: 7 ok, 4 failed, 0 already done; ")
    again = CliRunner().invoke(app, ["dataset", "encode", str(corpus_tree / "edge"), "-o", str(tmp_path / "e"),
                                     "-m", "test_24khz", "-j", "1", "-q"])
    assert again.exit_code == 0 and again.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["--shard-bytes", "lots"], "--shard-bytes lots: not a size (e.g. 256M)"),
    (["-e", "encodec-lm"], "--entropy encodec-lm is for .ecdc files: shards hold .tpk containers"),
    (["--address", "ray://x:10001"], "--address is for --engine ray"),
    (["-m", "nope"], "unknown model"),
])
def test_cli_usage_errors(args, message, tmp_path, signals):
    signals.write(tmp_path / "a.wav", signals.sine(2400), 24_000)
    result = CliRunner().invoke(app, ["dataset", "encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "ds"), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("tokpack: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_shard_bytes_sizes():
    from tokpack.cli.dataset_cmd import parse_size

    assert [parse_size(t) for t in ("1", "1K", "256M", "1.5G", "2MiB", "3kb")] == [
        1, 1024, 256 << 20, 3 << 29, 2 << 20, 3 << 10]


def test_shard_bytes_bound(corpus_tree, tmp_path):
    out = tmp_path / "ds"
    encode_dataset([str(corpus_tree / "edge")], out, model="test_24khz", jobs=1, shard_bytes=1)
    assert len(sh.list_shards(out, sh.PARQUET)) == 4  # one row each: every row reaches the bound


# ---- Ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_webdataset(corpus_tree, tmp_path_factory, test_24khz):
    pytest.importorskip("ray.data")
    out = tmp_path_factory.mktemp("ray") / "ds"
    result = encode_dataset([str(corpus_tree)], out, model="test_24khz", engine="ray", jobs=2,
                            shard_rows=4, format="webdataset")
    return out, result


def test_ray_and_local_give_the_same_keys_statuses_and_tokens(ray_webdataset, local_parquet, corpus_tree, tmp_path):
    out, result = ray_webdataset
    assert (result.ok, result.failed) == (local_parquet[1].ok, local_parquet[1].failed)
    manifest = json.loads((out / sh.MANIFEST).read_text())
    assert [f["key"] for f in manifest["failures"]] == sorted(FAILING)
    ray_rows = {meta["key"]: (tokens, meta) for _, tokens, meta in iter_tokens(out)}
    local_rows = {meta["key"]: (tokens, meta) for _, tokens, meta in iter_tokens(local_parquet[0])}
    assert ray_rows.keys() == local_rows.keys()
    for key, (tokens, meta) in ray_rows.items():
        assert np.array_equal(tokens, local_rows[key][0]), key
        assert meta == local_rows[key][1], key
    # the same containers, byte for byte (same threads): the local WebDataset run's tars
    local_wds = tmp_path / "wds"
    encode_dataset([str(corpus_tree)], local_wds, model="test_24khz", jobs=1, shard_rows=4, format="webdataset")
    assert [p.read_bytes() for p in sh.list_shards(local_wds, sh.WEBDATASET)] == \
        [p.read_bytes() for p in sh.list_shards(out, sh.WEBDATASET)]


# ---- batching -------------------------------------------------------------------------------


@pytest.mark.parametrize("longest", [60.0, 1.0])
def test_batched_inputs_give_the_same_shards(longest, local_parquet, corpus_tree, tmp_path, monkeypatch):
    """--batch 4: inputs read whole and encoded four per forward pass (codec.engine
    .encode_arrays), the containers byte for byte those of one input at a time; inputs
    longer than BATCH_MAX_SECONDS (here 1 s: the 3 s ones) streamed alone among them."""
    from tokpack.dataset import work

    monkeypatch.setattr(work, "BATCH_MAX_SECONDS", longest)
    out = tmp_path / "ds"
    result = encode_dataset([str(corpus_tree)], out, model="test_24khz", jobs=1, shard_rows=4, batch=4)
    assert (result.ok, result.failed) == (7, 4)
    assert [p.read_bytes() for p in sh.list_shards(out, sh.PARQUET)] == \
        [p.read_bytes() for p in sh.list_shards(local_parquet[0], sh.PARQUET)]


def test_a_model_that_cannot_load_is_said_once(tmp_path, signals):
    for name in ("a.wav", "b.wav"):
        signals.write(tmp_path / name, signals.sine(2400), 24_000)
    (tmp_path / "bad.th").write_bytes(b"not a checkpoint")
    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["dataset", "encode", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"),
                                      "-o", str(out), "-m", "test_24khz", "-j", "1", "--weights", str(tmp_path / "bad.th")])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"tokpack: {tmp_path / 'bad.th'}: ")
    assert not sh.list_shards(out, sh.PARQUET)


def test_progress_bar_when_asked(corpus_tree, tmp_path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["dataset", "encode", str(corpus_tree / "edge"), "-o", str(out),
                                      "-m", "test_24khz", "-j", "1", "--progress"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith(f"tokpack: {out}: 4 ok, 0 failed")
    assert "h of audio" in result.stderr  # the bar's own columns were drawn
