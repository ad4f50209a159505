# llama.cpp's tests where llama-cpp-python is not installed (CI: a clean clone). Sourced by
# scripts/test.sh, which calls llamacpp_ci_start before pytest and llamacpp_ci_finish after it.
#
# llama-cpp-python has no prebuilt Linux wheel on PyPI: it installs from a 76 MB sdist that
# compiles llama.cpp (12-40 min on 2 cores for the full build, mtmd and llama.cpp's common
# library included). What the tests need is the library alone, so the build here is reduced:
#   LLAVA_BUILD=OFF                the multimodal (mtmd) library, which e3bench never loads
#   SKBUILD_BUILD_TARGETS="llama;llama-common"
#                                  only libllama, the ggml libraries it links and llama-common
#                                  (llama-cpp-python forces LLAMA_BUILD_COMMON=ON and llama.cpp
#                                  installs it, so the install step fails without it); llama.cpp's
#                                  tests/examples/tools/server are already off as a subproject
# It runs in the background (nice 19: the tests keep the CPUs, the build takes what they leave)
# into a wheel, which is installed only after the main pytest run ends, so that run sees one
# consistent environment (its llama.cpp tests skip); then `pytest -m llamacpp` runs them.
#
# When: llama_cpp is not importable AND (CI=true OR E3BENCH_BUILD_LLAMACPP=1). A developer
# whose venv has llama_cpp runs those tests in the main run and builds nothing; one without it
# gets a note. Measured build times: docs/backends.md ("llama.cpp in CI").

LLAMACPP_PID=""
LLAMACPP_DIR=""
LLAMACPP_T0=0

# The llama-cpp-python requirement of the [llamacpp] extra (pyproject.toml is the one place it
# is pinned).
_llamacpp_requirement() {
  .venv/bin/python - <<'EOF'
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["llamacpp"]
print(next(r for r in extra if re.match(r"llama[-_]cpp[-_]python\b", r)))
EOF
}

llamacpp_ci_start() {
  if .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1; then
    return 0  # installed: its tests run in the main run
  fi
  if [[ "${CI:-}" != "true" && "${E3BENCH_BUILD_LLAMACPP:-}" != "1" ]]; then
    echo "note: llama-cpp-python is not installed: the llama.cpp tests are skipped" \
      "(E3BENCH_BUILD_LLAMACPP=1 builds it in the background and runs them last, as CI does)"
    return 0
  fi
  local req
  req="$(_llamacpp_requirement)"
  LLAMACPP_DIR="$(mktemp -d)"
  LLAMACPP_T0=$SECONDS
  echo "==> building '$req' in the background (reduced build, nice 19; log: $LLAMACPP_DIR/build.log);" \
    "the llama.cpp tests run after the others"
  # setsid: its own process group, so an interrupted test run stops the whole build (pip, cmake,
  # ninja, the compilers), see the EXIT trap below
  CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" SKBUILD_BUILD_TARGETS="llama;llama-common" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    setsid nice -n 19 .venv/bin/python -m pip wheel --no-deps -w "$LLAMACPP_DIR" "$req" \
    >"$LLAMACPP_DIR/build.log" 2>&1 </dev/null &
  LLAMACPP_PID=$!
  trap '[[ -n "$LLAMACPP_PID" ]] && kill -- -"$LLAMACPP_PID" 2>/dev/null; true' EXIT
}

# Wait for the build, install the wheel, run the llama.cpp tests with the arguments pytest got.
# Returns pytest's status; 1 (with the build log's end) when the build failed.
llamacpp_ci_finish() {
  [[ -n "$LLAMACPP_PID" ]] || return 0
  echo "==> waiting for the llama-cpp-python build (running for $(((SECONDS - LLAMACPP_T0) / 60)) min)"
  local status=0
  wait "$LLAMACPP_PID" || status=$?
  LLAMACPP_PID=""
  echo "==> llama-cpp-python build: exit $status after $(((SECONDS - LLAMACPP_T0) / 60)) min"
  if [[ $status -ne 0 ]]; then
    tail -n 30 "$LLAMACPP_DIR/build.log" >&2
    echo "error: llama-cpp-python did not build (log above: $LLAMACPP_DIR/build.log), so the llama.cpp" \
      "tests did not run; fix: see the log (compiler, cmake >= 3.21, network to PyPI)" >&2
    return 1
  fi
  # set -e does not hold inside a function called from `||`: every step checks its own status
  if ! .venv/bin/python -m pip install --disable-pip-version-check -q "$LLAMACPP_DIR"/llama_cpp_python-*.whl \
    || ! .venv/bin/python -c "import llama_cpp"; then
    echo "error: the llama-cpp-python wheel built in $LLAMACPP_DIR did not install or import (output above)" >&2
    return 1
  fi
  echo "==> the llama.cpp tests (-m llamacpp)"
  status=0
  .venv/bin/python -m pytest -q "$@" -m "llamacpp and not network and not heavy" || status=$?
  [[ $status -eq 5 ]] && status=0  # the arguments selected no llama.cpp test
  return "$status"
}
