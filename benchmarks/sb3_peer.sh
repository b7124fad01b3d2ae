#!/usr/bin/env bash
# Build the Stable-Baselines3 peer that the DQN benchmarks compare with, in its own virtual
# environment (never the project's): PyTorch 2.13 CPU, Stable-Baselines3, gymnasium, Box2D
# (LunarLander) and pygame (which gymnasium's Box2D module imports).
# usage: benchmarks/sb3_peer.sh [VENV=/tmp/sb3-peer-venv]   then run the printed python.
set -euo pipefail
venv=${1:-${SB3_VENV:-/tmp/sb3-peer-venv}}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import torch, stable_baselines3, gymnasium, Box2D, pygame' 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check "torch==2.13.0" "stable-baselines3==2.9.2" \
    "gymnasium>=1.0" box2d pygame
fi
echo "$venv/bin/python"
