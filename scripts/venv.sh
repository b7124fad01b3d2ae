#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install aquaml into it.
# Re-running is cheap: pip runs again only when setup.py changed since the last install.
# AQUAML_TF=gpu installs the CUDA build of TensorFlow instead of the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "aquaml needs Python 3.10 or newer; $python is $("$python" --version 2>&1)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
extras="${AQUAML_TF:-cpu},mpi,remote,tune,test"
stamp=".venv/.aquaml-installed"
want="$(sha256sum setup.py | cut -d' ' -f1) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
  echo "$want" > "$stamp"
fi
