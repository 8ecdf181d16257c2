#!/usr/bin/env bash
# The project venv: argoctl (editable) + test tools from PyPI, and Debian's bcc and
# nftables bindings made importable without exposing all of dist-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e . \
    pytest pytest-timeout virtme-ng wheel

# Only bcc and nftables from the system: a dir of symlinks on a .pth line.
sysdir="$(cd "$venv" && pwd)/argoctl-sys"
mkdir -p "$sysdir"
for mod in bcc nftables; do
    src=""
    for d in /usr/lib/python3/dist-packages /usr/local/lib/python3/dist-packages; do
        [ -d "$d/$mod" ] && { src="$d/$mod"; break; }
    done
    if [ -z "$src" ]; then
        echo "setup-venv: system python module '$mod' not found (apt package python3-${mod/bcc/bpfcc})" >&2
        exit 1
    fi
    ln -sfn "$src" "$sysdir/$mod"
done
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$sysdir" > "$site/argoctl-sys.pth"
"$venv/bin/python" -c 'import bcc, nftables, pyroute2, pytest, argoctl._echo, argoctl._pathcore' \
    || { echo "setup-venv: imports failed" >&2; exit 1; }
echo "setup-venv: $venv ready"
