#!/usr/bin/env bash
# Fresh-machine setup: a virtualenv in .venv with CPU torch first (so pip never pulls
# a multi-GB CUDA build), then paretune and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.13.0 CPU; elsewhere add: --index-url https://download.pytorch.org/whl/cpu
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch" 
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "is ignored" || true
.venv/bin/paretune --help >/dev/null
echo "paretune installed in .venv"
