#!/usr/bin/env bash
# The main job, end to end: encode the shipped example with the official EnCodec 24 kHz model and
# decode it back. Where the official weights can be neither found nor downloaded, say so loudly and
# fall back to the offline test model (whose audio is not speech).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-out}
mkdir -p "$out"
model=encodec_24khz
log="$out/encode.log"
if ! tokpack encode examples/hello.flac -o "$out/hello.tpk" -f -m "$model" 2>"$log"; then
    cat "$log" >&2
    if ! grep -q "weights for model $model not found" "$log"; then
        exit 1
    fi
    model=test_24khz
    echo "demo: official weights unavailable -> FALLING BACK to the test model $model" \
         "(random weights for offline use: the decoded audio will not sound like the input)" >&2
    tokpack encode examples/hello.flac -o "$out/hello.tpk" -f -m "$model"
else
    cat "$log" >&2
fi
tokpack decode "$out/hello.tpk" -o "$out/hello.wav" -f
echo "demo: $model: examples/hello.flac -> $out/hello.tpk -> $out/hello.wav" >&2
