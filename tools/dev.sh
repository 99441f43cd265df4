#!/usr/bin/env bash
# Atelier's setup and run script. Every step is idempotent and cached.
#
#   tools/dev.sh demo    set everything up, then run the main job (the demo)
#   tools/dev.sh test    set everything up, then run the whole test suite
#   tools/dev.sh setup   set everything up and build, run nothing
#
# Steps: apt packages -> .venv with torch 2.13.0 and the export tools (pinned by
# tools/export/constraints.txt) -> cargo build against the venv's libtorch -> demo models.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
MODELS=$CACHE/models
mkdir -p "$CACHE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

APT_PACKAGES=(pkg-config libasound2-dev pocketsphinx-testdata tmux ffmpeg sox espeak-ng)

# Run a network step up to 4 times (the registries sometimes drop long downloads).
retry() {
    local n
    for n in 1 2 3 4; do
        "$@" && return 0
        [ "$n" -lt 4 ] && say "attempt $n failed; retrying in $((n * 10)) s: $*" && sleep $((n * 10))
    done
    return 1
}

step_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    [ ${#missing[@]} -eq 0 ] && return
    say "installing apt packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    retry $sudo apt-get update -qq
    retry env DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

step_venv() {
    local want
    want=$(cat tools/export/requirements.txt tools/export/constraints.txt | sha256sum | cut -c1-16)
    if [ -f .venv/.atelier-stamp ] && [ "$(cat .venv/.atelier-stamp)" = "$want" ] && [ -e .venv/torch ]; then
        return
    fi
    say "creating .venv (torch 2.13.0 and the export tools; the first time takes a few minutes)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    retry .venv/bin/pip install -q --upgrade pip
    # Large CUDA wheels: resume interrupted downloads, and retry the whole install
    # (pip keeps finished wheels in its cache, so a retry only fetches what is missing).
    retry .venv/bin/pip install -q --retries 10 --timeout 60 --resume-retries 20 \
        -r tools/export/requirements.txt -c tools/export/constraints.txt
    local torch_dir
    torch_dir=$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/torch | head -n 1)
    ln -sfn "$torch_dir" .venv/torch
    echo "$want" > .venv/.atelier-stamp
}

step_build() {
    say "building atelier (release)"
    cargo build --release --quiet
}

# $1: which models (test: the ones the test suite needs; demo: all demo models)
step_models() {
    say "preparing models in $MODELS"
    .venv/bin/python -m tools.export demo --set "$1" --models "$MODELS" --cache "$CACHE/downloads" \
        --converted "$CACHE/converted"
}

# The demo uses the user's model store, so `atelier` finds the models afterwards.
install_user_models() {
    local store
    store=$(python3 -c 'import os; print(os.path.join(os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "atelier", "models"))')
    mkdir -p "$store"
    for m in "$MODELS"/*/; do
        local name
        name=$(basename "$m")
        if [ ! -d "$store/$name" ] || ! cmp -s "$m/manifest.toml" "$store/$name/manifest.toml"; then
            say "installing $name into $store"
            rm -rf "$store/$name.tmp" && cp -r "$m" "$store/$name.tmp"
            rm -rf "$store/$name" && mv "$store/$name.tmp" "$store/$name"
        fi
    done
}

case "${1:-}" in
    setup-env)
        step_apt; step_venv ;;
    setup)
        step_apt; step_venv; step_build; step_models demo ;;
    demo)
        step_apt; step_venv; step_build; step_models demo; install_user_models
        say "atelier doctor"
        target/release/atelier doctor
        DEMO_OUT=$CACHE/demo-out
        if [ -t 0 ] && [ -t 1 ]; then
            # A fresh folder each time, so the transcripts are made live in the TUI.
            rm -rf "$DEMO_OUT" && mkdir -p "$DEMO_OUT"
            cp /usr/share/pocketsphinx/test/data/librivox/*.wav "$DEMO_OUT"/
            say "atelier $DEMO_OUT: the TUI transcribes the LibriVox demo speech (? shows the keys, q quits)"
            target/release/atelier "$DEMO_OUT"
            say "outputs in $DEMO_OUT (txt, srt, vtt, tsv, json)"
        else
            say "atelier transcribe: the LibriVox demo speech with whisper-base -> $DEMO_OUT"
            target/release/atelier transcribe /usr/share/pocketsphinx/test/data/librivox/*.wav \
                --model whisper-base --output-dir "$DEMO_OUT" --output-format all
            say "outputs in $DEMO_OUT (txt, srt, vtt, tsv, json); for example:"
            cat "$DEMO_OUT"/sense_and_sensibility_01_austen_64kb-0870.srt
        fi ;;
    test)
        step_apt; step_venv; step_models test
        say "cargo test --release"
        ATELIER_TEST_MODELS="$MODELS" ATELIER_TEST_CONVERTED="$CACHE/converted" \
            cargo test --release -- --test-threads=2 ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 2 ;;
esac
