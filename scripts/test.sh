#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine (as root) and run them all:
# the venv with every extra, a PostgreSQL server on loopback, and a real Slurm (two nodes on this host).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
LLMJOBS_TEST_POSTGRES_URL="$(bash scripts/postgres-testbed.sh start)"
export LLMJOBS_TEST_POSTGRES_URL
bash scripts/slurm-testbed.sh start
trap 'bash scripts/slurm-testbed.sh stop || true; bash scripts/postgres-testbed.sh stop || true' EXIT
.venv/bin/python -m pytest -q -ra "$@"
