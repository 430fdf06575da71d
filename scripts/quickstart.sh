#!/usr/bin/env bash
# Set up llmjobs and run the example recipe on this machine (local backend, SQLite registry).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/llmjobs submit recipes/quickstart.yaml --wait
.venv/bin/llmjobs status
echo "sum of squares 1..100: $(cat "$(.venv/bin/llmjobs status --json | .venv/bin/python -c \
  'import json,sys; v=json.load(sys.stdin); print(v["run_dir"])')/total/total.txt")"
