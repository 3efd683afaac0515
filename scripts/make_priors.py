"""Train the CTX priors shipped in tokpack/priors/ for the test models.

The training audio is made here, so that it shares nothing with the test corpus
(../shared/corpus) the benchmarks measure on: speech synthesised by espeak-ng (eight voices
reading public-domain texts at varied speeds and pitches) and synthetic music from numpy
(melodies, bass and chords of harmonic tones with envelopes, drum hits, some echo).

    python scripts/make_priors.py            # every test model; needs espeak-ng on PATH
    python scripts/make_priors.py test_mimi  # only these (the others' priors are kept)
    python scripts/make_priors.py --keep DIR # also keep the training audio in DIR

Each prior is trained at the model's highest bandwidth, so it covers every bandwidth.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tokpack" / "priors"
SEED = 20261122

TEXTS = [  # public domain: Aesop's fable used in phonetics, and Harvard sentences
    "The North Wind and the Sun were disputing which was the stronger, when a traveler came "
    "along wrapped in a warm cloak. They agreed that the one who first succeeded in making "
    "the traveler take his cloak off should be considered stronger than the other.",
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. Rice is "
    "often served in round bowls. The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. "
    "Four hours of steady work faced us. A large size in stockings is hard to sell. The boy "
    "was there when the sun rose. A rod is used to catch pink salmon.",
    "Then the North Wind blew as hard as he could, but the more he blew the more closely did "
    "the traveler fold his cloak around him; and at last the North Wind gave up the attempt. "
    "Then the Sun shone out warmly, and immediately the traveler took off his cloak.",
]
VOICES = [("en-us", 0), ("en", 1), ("en-us", 2), ("de", 3), ("fr", 0), ("es", 1), ("it", 2),
          ("nl", 3)]


def speech(directory: Path, rng: np.random.Generator) -> list[Path]:
    out = []
    for i, (voice, text) in enumerate(VOICES):
        path = directory / f"speech_{i}_{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.integers(130, 190)),
                        "-p", str(rng.integers(30, 75)), "-w", str(path), TEXTS[text]],
                       check=True)
        out.append(path)
    return out


def _tone(freq: float, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    harmonics = rng.uniform(0.2, 0.8) ** np.arange(1, 9)
    wave = sum(a * np.sin(2 * np.pi * freq * (h + 1) * t) for h, a in enumerate(harmonics)
               if freq * (h + 1) < rate / 2)
    attack = np.minimum(t / 0.01, 1.0)
    return wave * attack * np.exp(-t * rng.uniform(1.5, 6.0))


def music(directory: Path, rng: np.random.Generator, pieces: int = 8,
          seconds: float = 8.0, rate: int = 44_100) -> list[Path]:
    out = []
    for i in range(pieces):
        n = int(seconds * rate)
        mix = np.zeros((n, 2))
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
        beat = 60 / rng.uniform(80, 150)
        t = 0.0
        while t < seconds - 1:
            for voice, (octave, gain) in enumerate(((2, 0.3), (0, 0.25), (1, 0.15))):
                if voice == 2 and rng.random() < 0.5:
                    continue
                step = scale[rng.integers(0, len(scale))]
                note = _tone(root * 2 ** (octave + step / 12), beat * rng.choice([1, 2]), rate,
                             rng) * gain
                start = int(t * rate)
                end = min(start + len(note), n)
                pan = rng.uniform(0.2, 0.8)
                mix[start:end, 0] += note[: end - start] * pan
                mix[start:end, 1] += note[: end - start] * (1 - pan)
            if rng.random() < 0.7:  # a drum: noise burst or a falling-pitch kick
                start = int(t * rate)
                k = int(0.15 * rate)
                env = np.exp(-np.arange(k) / (0.03 * rate))
                hit = (rng.standard_normal(k) if rng.random() < 0.5 else
                       np.sin(2 * np.pi * np.cumsum(np.linspace(150, 40, k)) / rate)) * env * 0.4
                end = min(start + k, n)
                mix[start:end] += hit[: end - start, np.newaxis]
            t += beat
        if rng.random() < 0.5:  # echo
            delay = int(rng.uniform(0.1, 0.3) * rate)
            mix[delay:] += 0.35 * mix[:-delay]
        mix *= rng.uniform(0.3, 0.9) / max(np.abs(mix).max(), 1e-9)
        path = directory / f"music_{i}.wav"
        sf.write(path, mix.astype(np.float32), rate, subtype="PCM_16")
        out.append(path)
    return out


def main() -> None:
    from tokpack.codec.priors import train_prior
    from tokpack.codec.registry import list_models

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="keep the training audio in this directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", nargs="*", help="test models to train for (default: all)")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed (apt-get install espeak-ng)")
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        files = speech(directory, rng) + music(directory, rng)
        OUT.mkdir(exist_ok=True)
        for model in args.models or [s.name for s in list_models() if s.is_test]:
            result = train_prior(files, OUT / f"{model}.tpp", model=model, threads=args.threads)
            report = result.report
            print(f"{model}: {result.seconds:.0f} s of audio, {report.n_tokens} tokens -> "
                  f"{(OUT / f'{model}.tpp').stat().st_size} bytes, sha256 {result.sha256}; "
                  f"held-out {np.mean(report.heldout_bits):.3f} bits/token "
                  f"(uniform {np.mean(report.uniform_bits):.3f}); "
                  f"neighbour model in {sum(1 for m in report.mix if m)} codebook(s)")


if __name__ == "__main__":
    main()
