#!/usr/bin/env bash
# Installs the third-party peers the tests in tests/peers/ talk to, into a virtual environment of their
# own (target/peer-venv), with pinned versions. Safe to run again: it only installs what is missing.
#
#   tests/peers/setup.sh            # then: cargo test -p concentrator-peer-tests
#
# Needs python3 with the venv module (Debian: apt-get install python3-venv) and access to PyPI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${CONCENTRATOR_PEER_VENV:-$root/target/peer-venv}"
requirements="$root/tests/peers/python/requirements.txt"

if ! command -v python3 >/dev/null 2>&1; then
    echo "tests/peers/setup.sh: python3 is not installed (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    python3 -m venv "$venv"
fi

# pip's own check makes a second run cheap: pinned packages already present are left alone.
if "$venv/bin/python" - "$requirements" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
missing = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, wanted = line.split("==")
    try:
        if version(name) != wanted:
            missing.append(line)
    except PackageNotFoundError:
        missing.append(line)
sys.exit(1 if missing else 0)
PY
then
    echo "peer packages already installed in $venv"
else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "installed the peer packages into $venv"
fi
"$venv/bin/python" -c 'import pymodbus, dlt645, serial; print("pymodbus", pymodbus.__version__, "| dlt645", dlt645.__version__, "| pyserial", serial.__version__)'
