#!/usr/bin/env bash
# Set up llmjobs and run recipes/tiny-math.yaml on this machine (local backend, SQLite registry, CPU only,
# nothing downloaded at run time): synthesize problems, train a tiny Llama, evaluate it, let it teach itself,
# train again, evaluate again, and print the comparison table. Wall times: docs/tiny-math.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --pipeline
.venv/bin/llmjobs submit recipes/tiny-math.yaml --wait
run_dir="$(.venv/bin/llmjobs status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["run_dir"])')"
echo
echo "tiny-math: each model on the held-out problems (8 samples each), from $run_dir/table/comparison.md"
cat "$run_dir/table/comparison.md"
