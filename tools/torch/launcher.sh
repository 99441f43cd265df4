#!/bin/sh
# atelier's launcher, installed as PREFIX/bin/atelier by `tools/dev.sh install`. It finds
# libtorch, then runs PREFIX/lib/atelier/atelier. libtorch, in this order:
#   1. $ATELIER_TORCH: a torch package folder (holding lib/), or a libtorch folder;
#   2. the libtorch the binary was built against (its rpath), when it is still there;
#   3. the torch of the python3 on the PATH.
# The one found must be the version the binary was built for (major.minor).
set -eu
self=$(readlink -f "$0")
prefix=$(dirname "$(dirname "$self")")
exe=$prefix/lib/atelier/atelier
built_lib="@TORCH_LIB@"

version_of() { # a torch folder -> its version (version.py of a torch package, build-version of libtorch)
    if [ -f "$1/version.py" ]; then
        sed -n "s/^__version__ = ['\"]\([^'\"+]*\).*/\1/p" "$1/version.py"
    elif [ -f "$1/build-version" ]; then
        cut -d+ -f1 "$1/build-version"
    fi
}

torch=""
how=""
if [ -n "${ATELIER_TORCH:-}" ]; then
    torch=$ATELIER_TORCH how="ATELIER_TORCH"
elif [ ! -e "$built_lib/libtorch_cpu.so" ]; then
    torch=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
    how="the torch of $(command -v python3 || echo python3)"
    if [ -z "$torch" ]; then
        echo "atelier: libtorch not found: $built_lib (built against) is gone, ATELIER_TORCH is not set and python3 has no torch" >&2
        exit 1
    fi
fi
if [ -n "$torch" ]; then
    if [ ! -e "$torch/lib/libtorch_cpu.so" ]; then
        echo "atelier: $torch ($how) has no lib/libtorch_cpu.so: give a torch package folder (.../site-packages/torch)" >&2
        exit 1
    fi
    want=$(version_of "$(dirname "$built_lib")")
    got=$(version_of "$torch")
    if [ -n "$want" ] && [ "${got%.*}" != "${want%.*}" ]; then
        echo "atelier: $torch ($how) is libtorch ${got:-of unknown version}; this atelier was built for $want (rebuild: tools/dev.sh install --torch $torch)" >&2
        exit 1
    fi
    LD_LIBRARY_PATH=$torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    ATELIER_TORCH_VIA="$how, through the launcher's LD_LIBRARY_PATH"
    export LD_LIBRARY_PATH ATELIER_TORCH_VIA
fi
ATELIER_TOOLS=${ATELIER_TOOLS:-$prefix/share/atelier}
export ATELIER_TOOLS
exec "$exe" "$@"
