#!/usr/bin/env bash
# Atelier's setup and run script. Every step is idempotent and cached.
#
#   tools/dev.sh demo      set everything up, then run the main job (the demo)
#   tools/dev.sh test      set everything up, then run the whole test suite
#                          (tools/dev.sh test -- --test NAME: cargo test's own arguments)
#   tools/dev.sh setup     set everything up and build, run nothing
#   tools/dev.sh build     set up the venv and build (no models)
#   tools/dev.sh install   set up and build, then put `atelier` on the PATH
#                          (--prefix DIR, default ~/.local: DIR/bin/atelier)
#
#   --torch DIR            build against the PyTorch already installed on this machine:
#                          DIR is its torch package folder, the one holding lib/ and
#                          include/ (e.g. .../site-packages/torch); nothing is downloaded
#                          for torch. Same as ATELIER_TORCH=DIR. PyTorch 2.11 and 2.13.
#
# Steps: apt packages -> a venv with torch and the export tools (pinned by
# tools/export/constraints.txt) -> cargo build against that libtorch -> demo models.
# Without --torch the venv is .venv (torch 2.13.0 from PyPI), the build target/ and the
# models .cache/models; with --torch DIR (version V) they are .cache/torch-V/venv (on top of
# DIR's own Python when it has one), target/torch-V and .cache/torch-V/models.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
mkdir -p "$CACHE"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

APT_PACKAGES=(pkg-config libasound2-dev pocketsphinx-testdata tmux ffmpeg sox espeak-ng postgresql-15)

# Run a network step up to 4 times (the registries sometimes drop long downloads).
retry() {
    local n
    for n in 1 2 3 4; do
        "$@" && return 0
        [ "$n" -lt 4 ] && say "attempt $n failed; retrying in $((n * 10)) s: $*" && sleep $((n * 10))
    done
    return 1
}

# ---------------------------------------------------------------- arguments

CMD=${1:-}
[ $# -gt 0 ] && shift
TORCH_DIR=${ATELIER_TORCH:-}
PREFIX=$HOME/.local
while [ $# -gt 0 ]; do
    case "$1" in
        --torch) [ $# -ge 2 ] || die "--torch needs a folder"; TORCH_DIR=$2; shift 2 ;;
        --torch=*) TORCH_DIR=${1#--torch=}; shift ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --) shift; break ;;
        *) die "unknown option $1 (see tools/dev.sh without arguments)" ;;
    esac
done

# The Python that owns TORCH_DIR (PREFIX/lib/pythonX.Y/site-packages/torch -> PREFIX/bin), if
# it imports exactly that torch.
owner_python() {
    local bin
    bin=$(cd "$TORCH_DIR/../../../.." 2>/dev/null && pwd -P)/bin
    for py in "$bin/python3" "$bin/python"; do
        [ -x "$py" ] || continue
        local found
        found=$("$py" -c 'import os, torch; print(os.path.realpath(os.path.dirname(torch.__file__)))' 2>/dev/null) || continue
        [ "$found" = "$TORCH_DIR" ] && { echo "$py"; return 0; }
    done
    return 1
}

# The torch build in use: the default pinned one, or the one at TORCH_DIR.
if [ -z "$TORCH_DIR" ]; then
    VENV=$ROOT/.venv
    TARGET=$ROOT/target
    MODELS=$CACHE/models
    CONVERTED=$CACHE/converted
else
    [ -d "$TORCH_DIR" ] || die "--torch $TORCH_DIR: no such folder"
    TORCH_DIR=$(cd "$TORCH_DIR" && pwd -P)
    for f in version.py lib/libtorch_cpu.so include/torch/csrc/api/include/torch/torch.h; do
        [ -e "$TORCH_DIR/$f" ] || die "--torch $TORCH_DIR: not a torch package folder (no $f; give the folder holding lib/ and include/, e.g. .../site-packages/torch)"
    done
    TORCH_VERSION=$(sed -n "s/^__version__ = ['\"]\([^'\"]*\)['\"].*/\1/p" "$TORCH_DIR/version.py")
    TORCH_BASE=${TORCH_VERSION%%+*}
    case "$TORCH_BASE" in
        2.11.*|2.13.*) ;;
        *) die "--torch $TORCH_DIR is PyTorch ${TORCH_VERSION:-of unknown version}; Atelier builds against PyTorch 2.11 and 2.13" ;;
    esac
    TORCH_MINOR=$(echo "$TORCH_BASE" | cut -d. -f2)
    KEY=torch-$TORCH_BASE
    # A bare torch folder (no Python of its own) gets its own build and venv: the venv then
    # holds a torch from PyPI, and the two must not take turns rebuilding each other.
    owner_python >/dev/null || KEY=$KEY-bare
    VENV=$CACHE/$KEY/venv
    TARGET=$ROOT/target/$KEY
    MODELS=$CACHE/$KEY/models
    CONVERTED=$CACHE/$KEY/converted
    export LIBTORCH=$TORCH_DIR CARGO_TARGET_DIR=$TARGET
    # tch 0.26 is generated for PyTorch 2.13: older headers get the compatibility layer
    # (tools/torch/README.md), which stubs the few ops they lack.
    if [ "$TORCH_MINOR" -lt 13 ]; then
        export CXXFLAGS="-include $ROOT/tools/torch/compat.h${CXXFLAGS:+ $CXXFLAGS}"
    fi
fi
# The export tools' Python, baked into the binary for `atelier models import` (the default
# build gets .venv/bin/python from .cargo/config.toml).
[ -n "$TORCH_DIR" ] && export ATELIER_EXPORT_PYTHON=$VENV/bin/python

# ---------------------------------------------------------------- steps

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

PIP_NET=(--retries 10 --timeout 60 --resume-retries 20)

# torch and its CUDA wheels take about 7 GB installed, and as much again in pip's cache. Say
# so before pip fails half-way with ENOSPC, and skip the cache when space is short.
free_gb() { echo $(( $(df -Pk "$1" | awk 'NR == 2 {print $4}') / 1048576 )); }

# $1: folder, $2: GB needed, $3: for what
need_space() {
    local avail_gb
    avail_gb=$(free_gb "$1")
    [ "$avail_gb" -ge "$2" ] || die "$1: $avail_gb GB free; $3 needs about $2 GB"
}

pip_space() {
    local need_gb=$1 avail_gb
    avail_gb=$(free_gb "$ROOT")
    [ "$avail_gb" -ge "$need_gb" ] ||
        die "$ROOT: $avail_gb GB free; the venv needs about $need_gb GB, and the build about 4 GB more"
    if [ "$avail_gb" -lt 20 ]; then
        say "$avail_gb GB free in $ROOT: installing without pip's cache"
        PIP_NET+=(--no-cache-dir)
    fi
}

step_venv() {
    local want
    want=$(cat tools/export/requirements.txt tools/export/constraints.txt | sha256sum | cut -c1-16)
    if [ -f .venv/.atelier-stamp ] && [ "$(cat .venv/.atelier-stamp)" = "$want" ] && [ -e .venv/torch ]; then
        return
    fi
    say "creating .venv (torch 2.13.0 and the export tools; the first time takes a few minutes)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    pip_space 8
    retry .venv/bin/pip install -q --upgrade pip
    # Large CUDA wheels: resume interrupted downloads, and retry the whole install
    # (pip keeps finished wheels in its cache, so a retry only fetches what is missing).
    retry .venv/bin/pip install -q "${PIP_NET[@]}" \
        -r tools/export/requirements.txt -c tools/export/constraints.txt
    local torch_dir
    torch_dir=$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/torch | head -n 1)
    ln -sfn "$torch_dir" .venv/torch
    echo "$want" > .venv/.atelier-stamp
}

# The export tools on top of TORCH_DIR's own Python (its torch is kept: pip sees it installed),
# or, for a bare torch folder, on a venv with the same torch version from PyPI.
step_torch_venv() {
    local owner="" base_py=python3 stamp want
    owner=$(owner_python) && base_py=$owner
    want=$( (cat tools/export/requirements.txt tools/export/constraints.txt; echo "$TORCH_DIR $TORCH_VERSION $owner") | sha256sum | cut -c1-16)
    stamp=$VENV/.atelier-stamp
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return
    if [ -n "$owner" ]; then
        say "creating $VENV on $owner (its torch $TORCH_VERSION; no torch download)"
        [ -x "$VENV/bin/python" ] || "$owner" -m venv "$VENV"
        # The owner's packages (torch and its CUDA libraries) after the venv's own: a .pth
        # file, since --system-site-packages would skip them when the owner is itself a venv.
        "$owner" -c 'import site, sysconfig; p = sysconfig.get_paths(); print("\n".join(dict.fromkeys([p["purelib"], p["platlib"]])))' \
            > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/atelier-torch.pth"
    else
        say "creating $VENV (torch $TORCH_BASE from PyPI for the export tools: $TORCH_DIR has no Python)"
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    fi
    # The pins, less the packages that come with a torch version (it pins them itself).
    local cons=$CACHE/$KEY/constraints.txt
    grep -v -E '^(torch|torchvision|triton|nvidia-|cuda-)' tools/export/constraints.txt > "$cons"
    echo "torch==$TORCH_BASE" >> "$cons"
    echo "torchvision==0.$((TORCH_MINOR + 15)).0" >> "$cons"
    local req=$CACHE/$KEY/requirements.txt
    sed -E 's/^(torch|torchvision)==.*/\1/' tools/export/requirements.txt > "$req"
    if [ -n "$owner" ]; then pip_space 2; else pip_space 8; fi
    retry "$VENV/bin/pip" install -q --upgrade pip
    retry "$VENV/bin/pip" install -q "${PIP_NET[@]}" -r "$req" -c "$cons"
    local got
    got=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
    [ "$got" = "$TORCH_BASE" ] || die "$VENV: the export tools' torch is $got, not $TORCH_BASE"
    echo "$want" > "$stamp"
}

# A bare torch folder (an unpacked wheel, no nvidia packages beside it) cannot resolve the
# CUDA runtime its libtorch_cpu.so links to: name the venv's copies to the build (build.rs).
torch_deps() {
    local so dir dirs=""
    for so in $(ldd "$TORCH_DIR/lib/libtorch_cpu.so" | awk '/not found/ {print $1}'); do
        dir=$(find "$VENV"/lib/python3*/site-packages/nvidia -name "$so" -print -quit 2>/dev/null)
        [ -n "$dir" ] || die "$TORCH_DIR/lib/libtorch_cpu.so needs $so, which neither it nor $VENV has"
        case ":$dirs:" in *":$(dirname "$dir"):"*) ;; *) dirs="$dirs:$(dirname "$dir")" ;; esac
    done
    if [ -n "$dirs" ]; then
        export ATELIER_TORCH_DEPS=${dirs#:}
        say "$TORCH_DIR lacks its CUDA runtime; linking to $ATELIER_TORCH_DEPS"
    fi
}

step_env() {
    if [ -z "$TORCH_DIR" ]; then step_venv; else step_torch_venv; torch_deps; fi
}

step_build() {
    say "building atelier (release) against ${TORCH_DIR:-$ROOT/.venv/torch}"
    cargo build --release --quiet
}

# $1: which models (test: the ones the test suite needs; demo: all demo models)
step_models() {
    say "preparing models in $MODELS"
    "$VENV/bin/python" -m tools.export demo --set "$1" --models "$MODELS" --cache "$CACHE/downloads" \
        --converted "$CONVERTED"
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

# PREFIX/bin/atelier (a launcher that finds libtorch), PREFIX/lib/atelier/atelier (the
# stripped binary), PREFIX/share/atelier/tools (the export tools), PREFIX/share/atelier/python
# (the export tools' Python).
step_install() {
    local prefix
    mkdir -p "$PREFIX"
    prefix=$(cd "$PREFIX" && pwd -P)
    local lib=$prefix/lib/atelier share=$prefix/share/atelier
    say "installing atelier into $prefix"
    mkdir -p "$prefix/bin" "$lib" "$share"
    strip -o "$lib/atelier.tmp" "$TARGET/release/atelier" && mv -f "$lib/atelier.tmp" "$lib/atelier"
    rm -rf "$share/tools.tmp" && mkdir -p "$share/tools.tmp"
    cp tools/__init__.py "$share/tools.tmp/"
    cp -r tools/export "$share/tools.tmp/export"
    find "$share/tools.tmp" -name __pycache__ -prune -exec rm -rf {} +
    rm -rf "$share/tools" && mv "$share/tools.tmp" "$share/tools"
    ln -sfn "$VENV/bin/python" "$share/python"
    "$TARGET/release/atelier" man "$prefix/share/man/man1"  # man atelier, man atelier-models-import …
    local built
    built=$(readelf -d "$lib/atelier" | sed -n 's/.*R[UN]*PATH.*\[\(.*\)\]/\1/p' | cut -d: -f1)
    sed -e "s|@TORCH_LIB@|$built|" tools/torch/launcher.sh > "$prefix/bin/atelier.tmp"
    chmod +x "$prefix/bin/atelier.tmp" && mv -f "$prefix/bin/atelier.tmp" "$prefix/bin/atelier"
    say "installed: $prefix/bin/atelier (libtorch $built)"
    case ":$PATH:" in
        *":$prefix/bin:"*) ;;
        *) say "add $prefix/bin to your PATH" ;;
    esac
}

run_tests() {
    say "cargo test --release (torch: ${TORCH_DIR:-$ROOT/.venv/torch})"
    # Test binaries (~2 GB) and the models the tests export into temp folders (~3 GB at peak).
    need_space "$ROOT" 5 "the test build"
    need_space "${TMPDIR:-/tmp}" 3 "the tests' temporary models"
    # The harness's own arguments after a `--` of the caller's (`-- --test X -- --nocapture`),
    # else after ours: a second `--` would make them test-name filters.
    local sep=(--)
    local a
    for a in "$@"; do [ "$a" = "--" ] && sep=(); done
    ATELIER_PYTHON="$VENV/bin/python" ATELIER_TEST_MODELS="$MODELS" ATELIER_TEST_CONVERTED="$CONVERTED" \
        cargo test --release "$@" "${sep[@]}" --test-threads=2
}

case "$CMD" in
    setup-env)
        step_apt; step_env ;;
    setup)
        step_apt; step_env; step_build; step_models demo ;;
    build)
        step_apt; step_env; step_build ;;
    paths)  # for scripts (tools/gpu/prepare.sh): where this torch's build, venv and models are
        printf 'TARGET=%q\nVENV=%q\nMODELS=%q\nCONVERTED=%q\n' "$TARGET" "$VENV" "$MODELS" "$CONVERTED" ;;
    install)
        step_apt; step_env; step_build; step_install ;;
    demo)
        step_apt; step_env; step_build; step_models demo; install_user_models
        ATELIER=$TARGET/release/atelier
        say "atelier doctor"
        "$ATELIER" doctor
        DEMO_OUT=$CACHE/demo-out
        if [ -t 0 ] && [ -t 1 ]; then
            # A fresh folder each time, so the transcripts are made live in the TUI.
            rm -rf "$DEMO_OUT" && mkdir -p "$DEMO_OUT"
            cp /usr/share/pocketsphinx/test/data/librivox/*.wav "$DEMO_OUT"/
            say "atelier $DEMO_OUT: the TUI transcribes the LibriVox demo speech (? shows the keys, q quits)"
            "$ATELIER" "$DEMO_OUT"
            say "outputs in $DEMO_OUT (txt, srt, vtt, tsv, json)"
        else
            say "atelier transcribe: the LibriVox demo speech with whisper-base -> $DEMO_OUT"
            "$ATELIER" transcribe /usr/share/pocketsphinx/test/data/librivox/*.wav \
                --model whisper-base --output-dir "$DEMO_OUT" --output-format all
            say "outputs in $DEMO_OUT (txt, srt, vtt, tsv, json); for example:"
            cat "$DEMO_OUT"/sense_and_sensibility_01_austen_64kb-0870.srt
        fi ;;
    test)
        step_apt; step_env; step_models test
        run_tests "$@" ;;
    *)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
        exit 2 ;;
esac
