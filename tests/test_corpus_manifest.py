"""Every edge and malformed corpus file behaves as its MANIFEST row says (through the CLI).

ok / ok_empty: encoded, decoded back to the same frame count, rate and channels.
ok_nonfinite, reject: one line `tokpack: PATH: reason`, status failed, no output file.
tolerated (header lies about the data size): encoded, with a warning naming the discrepancy.
"""

import csv
import json

import pytest
import soundfile as sf
from typer.testing import CliRunner

from tokpack.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def manifest(corpus_dir):
    with open(corpus_dir / "MANIFEST.tsv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}
    return {k: v for k, v in rows.items() if k.split("/")[0] in ("edge", "malformed")}


def test_edge_and_malformed_files_behave_as_the_manifest_says(manifest, corpus_dir, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["encode", "-r", str(corpus_dir / "edge"), str(corpus_dir / "malformed"),
                            "--output-dir", str(out), "-m", "test_24khz", "--json"])
    assert r.exit_code == 1  # some inputs are meant to fail
    assert "Traceback" not in r.stderr
    results = {str(o["path"]).split("corpus/", 1)[1]: o for o in map(json.loads, r.stdout.splitlines())}
    assert sorted(results) == sorted(manifest)
    lines = r.stderr.splitlines()
    for name, row in manifest.items():
        res, expect = results[name], row["expect"]
        path = str(corpus_dir / name)
        if expect in ("ok", "ok_empty", "tolerated"):
            assert res["status"] == "ok", (name, res)
            tpk = res["output"]
            wav = tmp_path / (name.replace("/", "_") + ".wav")
            d = runner.invoke(app, ["decode", tpk, "-o", str(wav), "-q"])
            assert d.exit_code == 0, (name, d.stderr)
            src, back = sf.info(path), sf.info(wav)
            assert (back.frames, back.samplerate, back.channels) == (src.frames, src.samplerate, src.channels), name
            if expect == "tolerated":
                assert res["warning"] and "WAV data chunk" in res["warning"], name
                assert any(l.startswith(f"tokpack: {path}: warning: WAV data chunk") for l in lines), name
            else:
                assert res["warning"] is None, name
        else:
            assert res["status"] == "failed", (name, res)
            assert not (out / name).with_suffix(".tpk").exists(), name
            mine = [l for l in lines if l.startswith(f"tokpack: {path}: ")]
            assert len(mine) == 1 and res["error"] in mine[0], (name, mine)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
