"""Live latency: speech played at real-time pace into `tokpack encode --live | tokpack decode --live`.

    python scripts/bench_live.py [--model test_24khz] [--seconds 60] [--piece-ms 20]
                                 [--packet 40] [--raw] [--input FILE] [--json]

The script is the microphone and the speaker. It starts both commands joined by a pipe,
writes the audio into the encoder's stdin in pieces of --piece-ms at the pace a sound card
would deliver them, and reads the decoder's stdout, timestamping every byte as it arrives. The output has exactly the
input's samples (same rate and channels), so sample i out is sample i in.

Reported:
* latency per input piece (window): from the moment the piece was written to the
  encoder until the decoder has written its last sample; p50, p95, max; split into the
  wait for the rest of its packet (the frames the codec needs, then the packet) and the
  rest (compute in both commands, the pipes, scheduling);
* underruns: windows that arrive after a player, started when the first window came out
  plus one packet of buffer and running at real-time pace, needed them;
* compute per call, measured in this process on the same audio and model: the live
  encoder per input piece, the live decoder per packet (both at --threads);
* the stream: output length against input length; and the fraction of codes equal to an
  offline encode of the same audio, for the live encoder fed the same pieces in this process.

Start-up (import torch, load the model: seconds) is not latency: 1 s of silence is
written first, and the clock starts once its audio has come out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT.parent / "shared" / "corpus" / "real" / "speech_en_f_allison_8k.wav"
WARMUP_S = 1.0


def speech(path: Path, rate: int, seconds: float) -> np.ndarray:
    """``seconds`` of the file at ``rate`` (looped), int16 mono."""
    import soundfile as sf
    import torch

    from tokpack.codec.audio import resample

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = resample(torch.from_numpy(x.mean(axis=1))[None], sr, rate)[0].numpy()
    n = int(seconds * rate)
    x = np.tile(x, -(-n // len(x)))[:n]
    return np.round(np.clip(x, -1, 1) * 32767).astype("<i2")


def wav_header(rate: int) -> bytes:
    from tokpack.codec.audio import wav_header

    return wav_header(rate, 1, "PCM_16", None)


class Reader(threading.Thread):
    """Reads a pipe to the end; (time, total bytes so far) after each read."""

    def __init__(self, f) -> None:
        super().__init__(daemon=True)
        self.f = f
        self.times: list[float] = []
        self.totals: list[int] = []
        self.data = bytearray()

    def run(self) -> None:
        fd = self.f.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            self.times.append(time.perf_counter())
            self.data += chunk
            self.totals.append(len(self.data))


def run_pipeline(audio: np.ndarray, rate: int, args) -> dict:
    tokpack = [sys.executable, "-m", "tokpack"]
    enc_cmd = [*tokpack, "encode", "--live", "-", "-c", "-q", "-m", args.model,
               "--packet", str(args.packet)]
    dec_cmd = [*tokpack, "decode", "--live", "-", "-c", "-q", "--raw"]
    if args.bandwidth is not None:
        enc_cmd += ["-b", str(args.bandwidth)]
    if args.raw:
        enc_cmd += ["--raw", "--raw-rate", str(rate)]
    if args.threads is not None:
        enc_cmd += ["--threads", str(args.threads)]
        dec_cmd += ["--threads", str(args.threads)]
    enc = subprocess.Popen(enc_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    dec = subprocess.Popen(dec_cmd, stdin=enc.stdout, stdout=subprocess.PIPE, bufsize=0)
    enc.stdout.close()  # the encoder's output goes straight to the decoder, as in a shell pipe
    out = Reader(dec.stdout)
    out.start()

    piece = int(rate * args.piece_ms / 1000)
    warm = int(WARMUP_S * rate)
    silence = np.zeros(warm, "<i2")
    t_start = time.perf_counter()
    if not args.raw:
        enc.stdin.write(wav_header(rate))
    enc.stdin.write(silence.tobytes())
    # start-up: until the warm-up's audio (less a packet or two still in flight) is out
    while (out.totals[-1] if out.totals else 0) < 2 * (warm - 4 * piece):
        if enc.poll() is not None or dec.poll() is not None:
            raise SystemExit(f"a command ended during start-up: encode {enc.returncode}, "
                             f"decode {dec.returncode}")
        time.sleep(0.005)
    startup = time.perf_counter() - t_start
    written = []  # (time the piece was written, its last sample's index in the stream)
    t0 = time.perf_counter()
    for k, a in enumerate(range(0, len(audio), piece)):
        due = t0 + k * args.piece_ms / 1000
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        block = audio[a:a + piece]
        enc.stdin.write(block.tobytes())
        written.append((time.perf_counter(), warm + a + len(block)))
    enc.stdin.close()
    enc.wait()
    dec.wait()
    out.join()
    late = np.asarray([t for t, _ in written]) - (t0 + np.arange(len(written)) * args.piece_ms / 1000)
    return {"written": written, "out": out, "late": late,
            "startup_s": startup, "encode_rc": enc.returncode, "decode_rc": dec.returncode,
            "warm": warm}


def latencies(written, out: Reader) -> np.ndarray:
    """Per window: time its last sample came out minus the time it went in (seconds)."""
    totals = np.asarray(out.totals) // 2  # int16 samples (raw output)
    times = np.asarray(out.times)
    lat = []
    for t_in, last in written:
        i = int(np.searchsorted(totals, last))  # the first read that holds sample `last`
        lat.append(times[i] - t_in if i < len(times) else np.nan)
    return np.asarray(lat)


def packet_waits(written, packet_samples: int) -> np.ndarray:
    """Per window, the wait for the rest of its packet (seconds): from its write until the
    write of the piece that completes the packet holding its last sample. Latency minus
    this is compute, pipes and scheduling."""
    times = np.asarray([t for t, _ in written])
    lasts = np.asarray([last for _, last in written])
    ends = -(-lasts // packet_samples) * packet_samples
    done = np.minimum(np.searchsorted(lasts, ends), len(lasts) - 1)  # the completing piece
    return times[done] - times


def underruns(written, lat: np.ndarray, piece_s: float, buffer_s: float) -> int:
    """Windows later than a player needs them: it starts when the first window is out,
    plus ``buffer_s``, and then plays one window every ``piece_s``."""
    arrive = np.asarray([t for t, _ in written]) + lat
    start = arrive[0] + buffer_s
    due = start + piece_s * np.arange(len(arrive))
    return int(np.sum(arrive > due))


def compute_times(audio: np.ndarray, rate: int, args) -> dict:
    """Per-call compute of the live encoder (per piece) and decoder (per packet), here."""
    import torch

    from tokpack.codec.live import packet_frames
    from tokpack.codec.threads import torch_threads
    from tokpack.codec.weights import load_model

    loaded = load_model(args.model)
    spec = loaded.spec
    bw = spec.default_bandwidth if args.bandwidth is None else args.bandwidth
    n_q = spec.n_codebooks(bw)
    x = torch.from_numpy(audio.astype(np.float32) / 32768)[None]
    piece = int(rate * args.piece_ms / 1000)
    threads = 1 if args.threads is None else args.threads
    with torch_threads(threads), torch.inference_mode():
        enc = loaded.stream_encoder(n_q, live=True)
        t_enc, codes = [], []
        for a in range(0, x.shape[1], piece):
            t = time.perf_counter()
            codes.append(enc.feed(x[:, a:a + piece]))
            t_enc.append(time.perf_counter() - t)
        codes.append(enc.finish())
        codes = np.concatenate(codes, axis=1)
        dec = loaded.stream_decoder(live=True)
        per = packet_frames(spec, args.packet)
        t_dec = []
        for a in range(0, codes.shape[1], per):
            t = time.perf_counter()
            dec.feed(codes[:, a:a + per])
            t_dec.append(time.perf_counter() - t)
    return {"encode_ms": np.asarray(t_enc) * 1e3, "decode_ms": np.asarray(t_dec) * 1e3,
            "packet_frames": per, "frame_ms": 1000 / spec.frame_rate, "codes": codes}


def agreement(codes: np.ndarray, audio: np.ndarray, rate: int, args) -> float:
    """Fraction of the live codes (this process, the same 20 ms pieces) equal to an offline
    encode of the same audio."""
    import soundfile as sf

    from tokpack.codec.engine import encode
    from tokpack.formats import read_container

    wav = io.BytesIO()
    sf.write(wav, audio, rate, format="WAV", subtype="PCM_16")
    wav.seek(0)
    offline = io.BytesIO()
    encode(wav, offline, model=args.model, bandwidth=args.bandwidth,
           threads=1 if args.threads is None else args.threads)
    want = read_container(io.BytesIO(offline.getvalue())).tokens[0]
    return float((want == codes).mean()) if want.shape == codes.shape else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="test_24khz")
    ap.add_argument("--bandwidth", type=float, default=None)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--piece-ms", type=float, default=20.0)
    ap.add_argument("--packet", type=int, default=40, help="encode --packet MS")
    ap.add_argument("--threads", type=int, default=None, help="both commands (default: theirs, 1)")
    ap.add_argument("--raw", action="store_true", help="raw PCM into the encoder (default WAV)")
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from tokpack.codec.registry import get_spec

    rate = get_spec(args.model).sample_rate
    audio = speech(args.input, rate, args.seconds)
    r = run_pipeline(audio, rate, args)
    out = r["out"]
    n_out = len(out.data) // 2
    lat = latencies(r["written"], out) * 1e3
    piece_s = args.piece_ms / 1000
    comp = compute_times(audio, rate, args)
    hop = round(comp["frame_ms"] * rate / 1000)
    wait = packet_waits(r["written"], comp["packet_frames"] * hop) * 1e3
    rest = lat - wait
    report = {
        "model": args.model, "input": "raw" if args.raw else "wav", "seconds": args.seconds,
        "piece_ms": args.piece_ms, "packet_frames": comp["packet_frames"],
        "packet_ms": comp["packet_frames"] * comp["frame_ms"],
        "startup_s": round(r["startup_s"], 2),
        "latency_ms": {"p50": round(float(np.nanpercentile(lat, 50)), 1),
                       "p95": round(float(np.nanpercentile(lat, 95)), 1),
                       "max": round(float(np.nanmax(lat)), 1)},
        "packet_wait_ms": {"p50": round(float(np.median(wait)), 1),
                           "p95": round(float(np.percentile(wait, 95)), 1)},
        "compute_pipes_ms": {"p50": round(float(np.nanpercentile(rest, 50)), 1),
                             "p95": round(float(np.nanpercentile(rest, 95)), 1),
                             "max": round(float(np.nanmax(rest)), 1)},
        "writes_late_ms": {"p50": round(float(np.median(r["late"])) * 1e3, 1),
                           "max": round(float(np.max(r["late"])) * 1e3, 1)},
        "underruns": underruns(r["written"], lat / 1e3, piece_s, comp["packet_frames"] * comp["frame_ms"] / 1000),
        "windows": len(lat),
        "encode_ms_per_piece": {"p50": round(float(np.median(comp["encode_ms"])), 2),
                                "p95": round(float(np.percentile(comp["encode_ms"], 95)), 2)},
        "decode_ms_per_packet": {"p50": round(float(np.median(comp["decode_ms"])), 2),
                                 "p95": round(float(np.percentile(comp["decode_ms"], 95)), 2)},
        "samples_in": r["warm"] + len(audio), "samples_out": n_out,
        "exact_length": n_out == r["warm"] + len(audio),
        "codes_equal_offline": round(agreement(comp["codes"], audio, rate, args), 5),
        "exit_codes": [r["encode_rc"], r["decode_rc"]],
    }
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
