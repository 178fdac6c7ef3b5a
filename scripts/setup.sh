#!/usr/bin/env bash
# Fresh-machine setup: a virtualenv in .venv with CPU torch first (so pip never pulls
# a multi-GB CUDA build), then paretune and its test extras.
#
# Each step's own output goes to .venv/setup.log and is shown only when the step fails:
# pip's notices about this machine's index settings and setuptools' banner for an
# editable install are not something to act on.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
LOG=.venv/setup.log
: > "$LOG"

step() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "setup failed at: $*" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

step .venv/bin/python -m pip install -q --upgrade pip
# torch 2.13.0 CPU; elsewhere add: --index-url https://download.pytorch.org/whl/cpu
# numpy comes with it: torch imported without numpy warns "Failed to initialize NumPy".
step .venv/bin/python -m pip install -q "torch==2.13.0" numpy
step .venv/bin/python -c "import torch"
step .venv/bin/python -m pip install -q -e ".[test,mlflow]"
# Bytecode for paretune's own modules, which an editable install leaves to the first
# import: where PYTHONDONTWRITEBYTECODE is set, every process (a driver, each trial
# worker, each CLI call) compiled them again, 0.1 CPU-s each.
step .venv/bin/python -m compileall -q search spaces objectives benchmarks tests examples
.venv/bin/paretune --help >/dev/null
echo "paretune installed in .venv (pip's output: $LOG)"
