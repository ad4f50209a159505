#!/usr/bin/env bash
# Set up (with test extras) and run the default test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# Headless Chromium renders the HTML report in a test (skipped with a reason when absent).
if [[ "${CI:-}" == "true" ]] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the report screenshot test will be skipped"
fi
if [[ -z "${E3BENCH_DATA_DIR:-}" && -d ../shared/data ]]; then
  export E3BENCH_DATA_DIR="$(cd ../shared/data && pwd)"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
.venv/bin/ruff check --quiet src tests benchmarks  # pyflakes, syntax, missing docstrings (pyproject)
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache  # layering contracts (pyproject)
# llama-cpp-python missing (CI's clean clone): build it in the background, its tests run last
source scripts/llamacpp_ci.sh
llamacpp_ci_start
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
llamacpp_ci_finish "$@" || status=$((status ? status : $?))
exit "$status"
