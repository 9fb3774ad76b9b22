"""Architecture, read from the source: no import cycle in bench/ or methods/, and what renders and
reads results (bench/report, bench/results) never imports torch or a method, directly or through
another module of ours."""
from __future__ import annotations

import subprocess
import sys

from tests.structure import source
from tests.structure.source import ROOT

# Third-party packages that are torch, or import it when they are imported.
TORCH = {"torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors"}
TORCH_FREE = ("bench.report", "bench.results")


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_import_graph_is_read() -> None:
    g = source.graph()
    assert "bench.spec" in g["bench.config"] and "bench.errors" in g["bench.spec"]
    assert "bench.exec.worker" in g["bench.exec.launchers"]
    assert "bench.scenarios.training" in g["bench.exec.worker"]  # an import inside a function counts
    assert "methods._structure" in g["methods.ia3"] and "methods.lora" in g["methods._quant"]


def test_cycles_are_found() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert source.cycles(g) == [["a", "b", "c"], ["e", "e2"]]
    assert source.path_within(g, "b", "a", {"a", "b", "c"}) == ["b", "c", "a"]


def test_no_import_cycle() -> None:
    g = source.graph()
    found = source.cycles(g)
    lines = []
    for component in found:
        first = component[0]
        back = next(w for w in sorted(g[first]) if w in component)
        chain = source.path_within(g, back, first, set(component))
        lines.append(f"  {' -> '.join([first, *chain])}   (the cycle's modules: {', '.join(component)})")
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_report_and_results_never_import_torch_or_methods() -> None:
    g = source.graph()
    offenders = []
    for start in (m for m in source.modules() if _under(m, TORCH_FREE)):
        reach = {start} | {m for m in source.modules() if source.path_within(g, start, m, set(source.modules()))}
        for module in sorted(reach):
            chain = source.path_within(g, start, module, set(source.modules())) or [start]
            if module.split(".")[0] == "methods":
                offenders.append(f"  {' -> '.join(chain)}  (a method)")
            for imp in source.imports(module):
                if not imp.project and imp.target in TORCH:
                    offenders.append(f"  {' -> '.join(chain)} -> {imp.target}  "
                                     f"({source.modules()[module].relative_to(ROOT)}:{imp.line})")
    assert not offenders, "torch or a method reached from bench/report or bench/results:\n" + "\n".join(
        sorted(set(offenders)))


def test_importing_report_and_results_loads_no_torch() -> None:
    """The same, as Python sees it: every module of those packages imported in a fresh interpreter."""
    names = [m for m in source.modules() if _under(m, TORCH_FREE)]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'methods'})\n"
            "print(' '.join(bad[:5]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


def test_the_gpu_check_runs_cells_through_the_runner_not_bench_run() -> None:
    """`bench run`'s exit code (no cell ok, --strict) must never stop the GPU check's stages: they call
    bench.exec.runner themselves, and nothing of the check reaches `bench run`, imported or spawned."""
    g = source.graph()
    lease = [m for m in source.modules() if _under(m, ("bench.tools.lease",))]
    assert any("bench.exec.runner" in g[m] for m in lease)
    for start in [*lease, "bench.cli.lease"]:
        chain = source.path_within(g, start, "bench.cli.run", set(source.modules()))
        assert not chain, " -> ".join(chain)
        text = source.modules()[start].read_text(encoding="utf-8")
        assert '"bench", "run"' not in text and "bench run " not in text.replace("`bench run`", ""), start
