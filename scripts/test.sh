#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine (as root) and run them all:
# the venv with every extra, a PostgreSQL server on loopback, a real Slurm (two nodes on this host), and a
# real OpenPBS server in a network namespace (built from shared/vendor/openpbs once per machine, ~7-10 min).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
LLMJOBS_TEST_POSTGRES_URL="$(bash scripts/postgres-testbed.sh start)"
export LLMJOBS_TEST_POSTGRES_URL
trap 'bash scripts/pbs-testbed.sh stop || true; bash scripts/slurm-testbed.sh stop || true; bash scripts/postgres-testbed.sh stop || true' EXIT
bash scripts/slurm-testbed.sh start
# the PBS commands work only inside the test bed's namespace: the tests call them through these shims
LLMJOBS_TEST_PBS_BIN="$(bash scripts/pbs-testbed.sh start)"
export LLMJOBS_TEST_PBS_BIN
.venv/bin/python -m pytest -q -ra "$@"
