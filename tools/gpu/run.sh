#!/usr/bin/env bash
# On the GPU machine (or, to try it, here): puts the carried parts together, unpacks them,
# then runs tools/gpu/check.py, which writes $OUT/gpu-report.json (tools/gpu/README.md).
#
#   tools/gpu/run.sh [check.py options: --budget S, --only STEP…, --device cpu --quick]
#
# ATELIER_GPU_PYTHON: the Python with the machine's torch (default: python3 on the PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
G=$ROOT/.gpu
OUT=${OUT:-$G/out}
W=${ATELIER_GPU_WORK:-/tmp/atelier-gpu}
PY=${ATELIER_GPU_PYTHON:-$(command -v python3)}
mkdir -p "$OUT" "$W"

fail() { # a report that says why nothing ran
    "$PY" -c 'import json, sys; json.dump({"error": sys.argv[1]}, open(sys.argv[2], "w"))' "$1" "$OUT/gpu-report.json"
    echo "error: $1" >&2
    exit 3
}
read -r n sha < <(cat "$G"/part*/PARTS 2>/dev/null | head -n 1) || fail "no parts in $G: run tools/gpu/prepare.sh here and carry them"
have=$(ls "$G"/part*/payload.tar.* 2>/dev/null | wc -l)
[ "$have" = "$n" ] || fail "$have of $n parts are here ($(ls -d "$G"/part* | xargs -n1 basename | tr '\n' ' ')); carry the missing ones (the machine may have been given back in between)"

if [ ! -f "$W/payload/.sha" ] || [ "$(cat "$W/payload/.sha")" != "$sha" ]; then
    echo "==> unpacking $n parts" >&2
    rm -rf "$W/payload" "$W/py" && mkdir -p "$W/payload" "$W/py" "$W/bin"
    cat $(ls "$G"/part*/payload.tar.* | awk -F. '{print $NF, $0}' | sort -n | cut -d' ' -f2-) | tee "$W/payload.tar" | sha256sum | grep -q "^$sha " \
        || fail "the parts do not add up to the payload (sha256 differs): prepare and carry them again"
    tar -xf "$W/payload.tar" -C "$W/payload" && rm -f "$W/payload.tar"
    "$PY" - "$W" <<'PYEOF'
import lzma, shutil, sys, tarfile, zipfile
from pathlib import Path
w = Path(sys.argv[1])
with lzma.open(w / "payload/atelier.xz") as src, open(w / "bin/atelier", "wb") as dst:
    shutil.copyfileobj(src, dst)
(w / "bin/atelier").chmod(0o755)
for p in sorted((w / "payload/wheels").iterdir()):
    if p.suffix == ".whl":
        zipfile.ZipFile(p).extractall(w / "py")
    elif p.name.endswith(".tar.gz"):  # openai-whisper ships an sdist only: its package folder
        with tarfile.open(p) as t:
            t.extractall(w / "sdist", filter="data")
        for pkg in (w / "sdist").glob("*/whisper"):
            shutil.copytree(pkg, w / "py/whisper", dirs_exist_ok=True)
PYEOF
    echo "$sha" > "$W/payload/.sha"
fi

TORCH=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH="$TORCH/lib:$W/payload/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ATELIER_TORCH_VIA="tools/gpu/run.sh: the torch of $PY"
export PYTHONPATH="$W/py:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export ATELIER_TOOLS=$ROOT ATELIER_PYTHON=$PY
"$PY" tools/gpu/check.py --atelier "$W/bin/atelier" --payload "$W/payload" --work "$W" --out "$OUT" "$@"
