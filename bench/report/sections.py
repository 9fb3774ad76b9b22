"""What the report says, once, for every renderer: its title and sections (versions, how each
column is computed, summary, ladders, time to target, sweeps, cells, failed cells and their
tracebacks, cells without accuracy or validation accuracy, charts, environment), as blocks
(bench/report/document.py) that report.md and report.html walk. Where the report chooses (a sweep's
point, the best in bold) it says that the choice was made on validation accuracy."""
from __future__ import annotations

import json
from typing import Any, Sequence

from bench.report.cells import UNITS_NOTE
from bench.report.charts import Skipped
from bench.report.data import RunData
from bench.report.document import Block, Bullets, Code, Document, Figure, Pairs, Section, Terms, Text
from bench.report.footing import notes as footing_notes
from bench.report.ladder import ladders
from bench.report.ladder import table as ladder_table
from bench.report.sweeps import CHOSEN_ON, points_table, sweeps
from bench.report.sweeps import table as sweep_table
from bench.report.tables import cells_table, failed_table, summary_table, tracebacks
from bench.report.target import table as target_table
from bench.results.record import Record

# How each headline column is computed: the report's header says it, once, for every renderer.
DEFINITIONS = (
    ("Peak memory", "the training steps' peak (warm-up included, evaluation and loading excluded). CUDA: torch's "
                    "peak allocated bytes, plus a paged optimizer's state in CUDA managed memory, which torch does "
                    "not see. CPU: the peak resident set (Linux VmHWM, reset before the first step) above the "
                    "resident set just before the model loaded, so the interpreter and libraries are not in it (nor "
                    "library code paged in since); "
                    "'Memory taken under' names glibc's allocator then: 'release' (freed blocks go back to the "
                    "OS, so the peak follows the live tensors, as the memory model predicts), from a memory pass "
                    "of a few steps before the timed ones where it says so (the timed steps' own peak, under "
                    "glibc's defaults, is timed_peak_mem_GiB in results.csv), or 'default' (freed blocks kept on "
                    "the heap: 30-70% above the live tensors on these cells). "
                    "Tables, charts, the breakdown and predicted-vs-measured all use this one figure."),
    ("Step time", "median of the timed steps (warm-up excluded); IQR and CV over the same steps."),
    ("Throughput", "mean real (non-padding) tokens per timed step divided by the median step time: the same "
                   "statistic as the step time, so the two rank methods alike (results.csv also has "
                   "tokens_per_s_overall, all timed tokens over the summed step times)."),
    ("Accuracy", "on the first eval_examples examples of the task's fixed test split, after training; on a "
                 "generative task (arith, gsm8k) by greedy generation, exact match on the extracted final number. "
                 "'Acc. before training' is the same score before the first step (zero-shot). Test accuracy is "
                 "only reported: nothing in this report is chosen on it."),
    ("Validation accuracy", "the same score on the first validation_examples examples of the task's validation "
                            "split (as many as eval_examples unless set), after training. Every choice here is "
                            "made on it: a sweep's point, the best accuracy in bold, the Pareto front. A sweep "
                            "shows only its chosen point outside the Sweeps section; where there is no "
                            "validation accuracy nothing is chosen (never test accuracy instead)."),
    ("Forgetting", "mean per-token loss on general text after training minus before (nats/token; causal LMs); "
                   "the record's quality.general_text names the text."),
    ("Eval gen. tokens/s", "tokens generated per second by the evaluation after training (generative tasks)."),
    ("Energy", "joules over the timed steps (device synchronized at both ends), per 1,000 real tokens in "
               "the tables; train_kJ in the charts. CUDA: NVML's total-energy counter of the whole GPU (power "
               "samples integrated where it has none). CPU: the RAPL package counters, where readable, which "
               "count the whole machine's packages. Otherwise empty, and energy.note in the record says why."),
    ("Predicted", "the memory model's peak for the same cell (bench predict): the live tensors, so on the CPU "
                  "it compares with a figure taken under 'release'; 'vs measured' is predicted / measured - 1."),
)
VERSION_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")
TORN = "The last line of results.jsonl is torn (a writer was stopped mid-line) and was skipped."


def title(data: RunData) -> str:
    matrices = sorted({m for m in data.cells["matrix"] if m})
    return f"Benchmark report: {', '.join(matrices) or data.run_dir.name}"


def versions_line(env: dict[str, Any], records: Sequence[Record]) -> str:
    """The versions that decide the numbers, and the device, in one line for the report's header."""
    packages = env.get("packages") or {}
    parts = [f"{name} {packages.get(name) or 'not installed'}" for name in VERSION_PACKAGES]
    if env.get("cuda_available"):
        parts += [f"CUDA {env.get('cuda') or '?'}", f"driver {env.get('driver') or '?'}"]
    devices = sorted({str(r.device.name) for r in records if r.device.name})
    if not devices:
        gpus = [g.get("name") for g in env.get("gpus") or [] if isinstance(g, dict)]
        devices = gpus or ([env["cpu"]] if env.get("cpu") else [])
    parts.append("device: " + (", ".join(devices) or "not recorded"))
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    return " · ".join(parts)


def flatten(env: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested env.json as (dotted key, value) pairs."""
    if isinstance(env, dict):
        out: list[tuple[str, str]] = []
        for k, v in env.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    text = env if isinstance(env, str) else json.dumps(env, default=str)
    return [(prefix, text)]


def _counts(data: RunData) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in data.cells["status"].value_counts().items()) or "no cells"
    return f"{len(data.cells)} cells: {counts}."


def _failures(data: RunData) -> list[Section]:
    out = [Section("Failed cells", [failed_table(data)] if len(data.failed) else [],
                   empty="None: every cell finished.")]
    traces = tracebacks(data)
    if traces:  # the last frames; the cell's log (RUN_DIR/logs/CELL_ID.log) holds the whole traceback
        out.append(Section("Tracebacks of failed cells (last frames; the whole one is in the cell's log)",
                           [Code(name, tb) for name, tb in traces]))
    c = data.cells
    notes = c[(c["accuracy_note"] != "") & c["accuracy_%"].isna()]
    if len(notes):
        out.append(Section("Cells without accuracy",
                           [Bullets([f"{n}: {why}" for n, why in zip(notes["name"], notes["accuracy_note"])])]))
    unvalidated = c[(c["validation_note"] != "") & c["validation_accuracy_%"].isna() & (c["accuracy_note"] == "")
                    & (c["status"] == "ok")]
    if len(unvalidated):
        out.append(Section("Cells without validation accuracy (nothing is chosen on them)", [
            Bullets([f"{n}: {why}" for n, why in zip(unvalidated["name"], unvalidated["validation_note"])])]))
    return out


def _ladders(data: RunData) -> list[Section]:
    """A section per recipe ladder: each rung adds one technique; Δ is against the nearest rung above
    that finished."""
    return [Section(f"Ladder '{ladder}': {model} on {task} (seeds averaged; Δ against the rung above)",
                    [ladder_table(rungs)]) for (ladder, model, task), rungs in ladders(data).items()]


def _target(data: RunData) -> list[Section]:
    found = target_table(data)
    if found is None:
        return []
    return [Section("Time to target (mean ± 95% CI over the seeds that reached it; fastest first)", [
        found, Text("Validation accuracy, scored every target_every steps; training time from the first step "
                    "(warm-up included), evaluations and compilation excluded. Groups that never reached the "
                    "target come last.", note=True)])]


def _sweeps(data: RunData) -> list[Section]:
    found = sweeps(data)
    if not found:
        return []
    return [Section(f"Sweeps (each point chosen on {CHOSEN_ON}; seeds averaged)", [
        sweep_table(found),
        Text(f"Each sweep's chosen point is its best on {CHOSEN_ON}; only that point is in the summary, the "
             "charts and the cell table, with its test accuracy. A sweep without validation accuracy has no "
             "point chosen, and none of its points is shown outside this section. A warning means the chosen "
             "point sits on an edge of the grid: the optimum may lie beyond it.", note=True),
        points_table(found),
        Text("Every grid point, validation and test accuracy side by side (test accuracy is reported, never "
             "ranked on); the same in sweeps.csv.", note=True)])]


def _summary(data: RunData) -> list[Section]:
    """The seed-group summary, with what its best accuracy was chosen on."""
    g = data.groups
    lines = []
    if g["validation_accuracy_%"].notna().any():
        lines.append(f"The best accuracy in bold is the group with the best {CHOSEN_ON}; the figure shown is its "
                     "test accuracy.")
    elif g["accuracy_%"].notna().any():
        lines.append("No group recorded a validation accuracy, so no accuracy is marked best (test accuracy is "
                     "never used to choose).")
    hidden = sum(len(s.points) - (s.chosen is not None) for s in data.sweeps)
    if hidden:
        lines.append(f"Of each sweep only the point chosen on {CHOSEN_ON} is listed ({hidden} points not chosen "
                     "are in the Sweeps section only).")
    notes: list[Block] = [Text(" ".join(lines), note=True)] if lines else []
    unequal = footing_notes(data.seed_groups)
    if unequal:
        notes.append(Bullets(unequal, note=True))
    return [Section("Summary (mean ± 95% CI over seeds; best in bold)", [summary_table(data), *notes])]


def chart_blocks(charts: Sequence[Figure | Skipped]) -> list[Block]:
    """Drawn charts as figures; skipped ones as notes saying why, consecutive ones in one list."""
    out: list[Block] = []
    for chart in charts:
        if isinstance(chart, Figure):
            out.append(chart)
            continue
        line = f"Chart '{chart.stem}' skipped: {chart.reason}."
        if out and isinstance(out[-1], Bullets):
            out[-1].lines = [*out[-1].lines, line]
        else:
            out.append(Bullets([line], note=True))
    return out


def describe(data: RunData, charts: Sequence[Figure | Skipped]) -> Document:
    """The whole report, for every renderer."""
    sections = [Section(None, [Text(versions_line(data.env, data.records)), Text(_counts(data))]),
                Section("How each column is computed", [Terms([*DEFINITIONS, ("Units", UNITS_NOTE)])])]
    if data.skipped_torn:
        sections.append(Section(None, [Text(TORN, note=True)]))
    if len(data.groups):
        sections += _summary(data)
        sections += _ladders(data)
        sections += _target(data)
    sections += _sweeps(data)  # also where no group is shown: a sweep with no point chosen
    if len(data.groups):
        sections.append(Section("Cells", [cells_table(data)]))
    sections += _failures(data)
    unequal = footing_notes(data.seed_groups) if any(isinstance(c, Figure) for c in charts) else []
    sections.append(Section("Charts", [*([Bullets(unequal, note=True)] if unequal else []), *chart_blocks(charts)],
                            empty="No charts were asked for."))
    env = flatten(data.env)
    sections.append(Section("Environment", [Pairs(env)] if env else [], empty="No env.json in the run folder."))
    return Document(title(data), sections)
