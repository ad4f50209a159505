#!/usr/bin/env bash
# Set up (with test extras) and run the default test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if [[ -z "${E3BENCH_DATA_DIR:-}" && -d ../shared/data ]]; then
  export E3BENCH_DATA_DIR="$(cd ../shared/data && pwd)"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
exec .venv/bin/python -m pytest -q "$@"
