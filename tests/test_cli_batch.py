"""Batches: directory trees, failures that don't stop the batch, JSON, -t, signals."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from tokpack.cli import app
from tokpack.formats import read_header

runner = CliRunner()


def make_tree(root, signals):
    """3 good files at 3 depths, 2 broken ones, 1 non-audio file."""
    (root / "a" / "b").mkdir(parents=True)
    signals.write(root / "one.wav", signals.chirp(12_000), 24_000)
    signals.write(root / "a" / "two.wav", signals.sine(8_000, rate=16_000, channels=2), 16_000)
    signals.write(root / "a" / "b" / "three.flac", signals.noise(4_000), 8_000, subtype="PCM_16")
    (root / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "a" / "b" / "text.wav").write_text("not audio at all")
    (root / "a" / "notes.txt").write_text("ignored: not an audio suffix")
    return ["one.wav", "a/two.wav", "a/b/three.flac"], ["a/broken.wav", "a/b/text.wav"]


def files_below(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.slow  # 49 s, mostly two workers importing torch; -j 2 is also in test_hostile
def test_tree_mirrors_reports_failures_and_leaves_no_temporaries(tmp_path, signals):
    good, bad = make_tree(tmp_path / "in", signals)
    out = tmp_path / "out"
    r = runner.invoke(app, ["encode", "-r", str(tmp_path / "in"), "--output-dir", str(out), "-m", "test_24khz", "-j", "2"])
    assert r.exit_code == 1
    assert files_below(out) == sorted(g.rsplit(".", 1)[0] + ".tpk" for g in good)
    for name in bad:
        assert f"tokpack: {tmp_path / 'in' / name}: " in r.stderr
    assert r.stderr.splitlines()[-1] == "tokpack: 3 ok, 0 skipped, 2 failed"
    assert r.stdout == ""
    # decode the tree back, verify it, and rerun: everything is skipped now
    r = runner.invoke(app, ["decode", "-r", str(out), "--output-dir", str(tmp_path / "wav"), "-q"])
    assert r.exit_code == 0, r.stderr
    assert files_below(tmp_path / "wav") == sorted(g.rsplit(".", 1)[0] + ".out.wav" for g in good)
    assert runner.invoke(app, ["decode", "-t", "-r", str(out)]).exit_code == 0
    r = runner.invoke(app, ["encode", "-r", str(tmp_path / "in"), "--output-dir", str(out), "-m", "test_24khz"])
    assert r.stderr.splitlines()[-1] == "tokpack: 0 ok, 3 skipped, 2 failed"


def test_json_has_one_object_per_input(tmp_path, signals):
    good, bad = make_tree(tmp_path / "in", signals)
    r = runner.invoke(app, ["encode", "-r", str(tmp_path / "in"), "-m", "test_24khz", "--json", "-q"])
    assert r.exit_code == 1
    objs = {o["path"]: o for o in map(json.loads, r.stdout.splitlines())}
    assert len(objs) == 5
    keys = {"schema_version", "path", "output", "status", "error", "warning", "bytes_in", "bytes_out",
            "duration_s", "bitrate_bps", "seconds", "lost", "doubts", "prior", "prior_gain"}
    for o in objs.values():
        assert set(o) == keys and o["schema_version"] == 1
    one = objs[str(tmp_path / "in" / "one.wav")]
    assert one["status"] == "ok" and one["error"] is None
    assert one["output"] == str(tmp_path / "in" / "one.tpk")
    assert one["duration_s"] == 0.5 and one["bytes_out"] == os.path.getsize(one["output"])
    assert one["bitrate_bps"] == one["bytes_out"] * 8 / 0.5
    assert one["prior"] == read_header(one["output"]).prior_sha256.hex()  # the shipped prior
    broken = objs[str(tmp_path / "in" / "a" / "broken.wav")]
    assert broken["status"] == "failed" and broken["output"] is None and broken["error"]
    assert not (tmp_path / "in" / "a" / "broken.tpk").exists()


def test_test_mode_finds_damage_and_writes_nothing(tmp_path, signals):
    src = signals.write(tmp_path / "x.wav", signals.chirp(24_000), 24_000)
    assert runner.invoke(app, ["encode", str(src), "-m", "test_24khz", "-q"]).exit_code == 0
    tpk = tmp_path / "x.tpk"
    data = bytearray(tpk.read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.tpk").write_bytes(bytes(data))
    before = files_below(tmp_path)
    r = runner.invoke(app, ["decode", "-t", str(tpk), str(tmp_path / "bad.tpk")])
    assert r.exit_code == 1
    assert f"tokpack: {tmp_path / 'bad.tpk'}: offset " in r.stderr and "crc32" in r.stderr
    assert f"{tpk} : OK" in r.stderr or "1 ok, 0 skipped, 1 failed" in r.stderr
    assert files_below(tmp_path) == before


def test_sigterm_and_sigint_remove_temporaries(tmp_path, signals):
    long = signals.write(tmp_path / "long.wav", np.tile(signals.chirp(24_000), (90, 1)), 24_000)
    for sig, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        out = tmp_path / f"out-{status}.tpk"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokpack", "encode", str(long), "-m", "test_24khz", "-o", str(out), "-T", "1"],
            stderr=subprocess.PIPE,
            # a shell's background job inherits SIGINT ignored, and Python then installs no
            # KeyboardInterrupt handler: give the child the default, as a terminal would
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(60) == status
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
