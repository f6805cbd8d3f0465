#!/usr/bin/env bash
# Set up (or refresh) the development environment: Debian packages (when root), the .venv,
# pinned dependencies and the three workspace packages in editable mode.
# Idempotent: a second run with unchanged inputs returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# Debian packages: OSMesa for headless MuJoCo rendering.
APT_PACKAGES=(libosmesa6)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] warning: missing Debian packages ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})" >&2
  fi
fi

# The stamp holds a hash of every input that shapes the venv; equal hash means nothing to do.
inputs_hash=$(cat requirements.txt scripts/setup.sh src/*/setup.py src/*/setup.cfg | sha256sum | cut -d' ' -f1)
stamp="$VENV/.uwm-setup-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs_hash" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
echo "[setup] installing pinned dependencies (first run: a few minutes)"
"${PIP[@]}" install -r requirements.txt 2> >(grep -v "is ignored: it is neither" >&2)
"${PIP[@]}" install --no-deps robosuite==1.5.2
"${PIP[@]}" install --no-deps -e src/uwm_core -e src/uwm_ros -e src/uwm_teleop
echo "$inputs_hash" > "$stamp"
echo "[setup] ready: $VENV"
