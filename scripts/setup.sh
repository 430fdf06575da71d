#!/usr/bin/env bash
# Create .venv and install llmjobs into it.
#   scripts/setup.sh            the light core (what a login node needs): submit, status, resume...
#   scripts/setup.sh --test     + test tools, PostgreSQL driver, grading/report extras, and the CPU
#                               inference stack (vLLM's CPU build, Ray, transformers) the tests use
#   scripts/setup.sh --pipeline + what recipes/tiny-math.yaml runs on a CPU: torch's CPU build, transformers,
#                               tokenizers, SymPy, math-verify (scripts/quickstart.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  python -m pip install -q -e '.[dev,postgres,eval,synth]'
  PIP="python -m pip" bash scripts/install-cpu-inference.sh
  # the code sandbox's namespaces (synth.multistage); its tests fall back to rlimits-only without it
  if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    { $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1; }; } \
      || echo "bubblewrap not installed: the sandbox runs with rlimits only" >&2
  fi
elif [ "${1:-}" = "--pipeline" ]; then
  # torch's CPU build from PyTorch's index (no index there: what pip finds elsewhere; PyPI's also runs on CPUs)
  python -m pip install -q --retries 0 --timeout 15 torch --index-url https://download.pytorch.org/whl/cpu \
    || python -m pip install -q torch
  python -m pip install -q -e '.[eval,synth,train]'
else
  python -m pip install -q -e .
fi
