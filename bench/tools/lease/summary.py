"""summary.md: what a lease brought back, on one page: the stages and what each call spent on them;
the stage-1 rows against the hand-written loop (step time and torch's peak, with the targets); the
paged optimizers' managed memory against NVML's device figure; QLoRA against LoRA; the memory model
against every measured peak; the harness's overhead; the GPU tests; every cell. MiB are 2^20 bytes,
GiB 2^30. Torch-free."""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable

from bench.results.peaks import headline_peak, predicted_headline
from bench.results.record import Record
from bench.spec import is_paged
from bench.tools.lease.handloop import MIB, HandLoop
from bench.tools.lease.stages import Plan
from bench.tools.lease.state import State

GIB = 2**30
STEP_TARGET, PEAK_TARGET, MODEL_TARGET = 0.02, 0.01, 0.05  # within 2%, within 1%, within 5%
QLORA_STEP_TARGET, QLORA_SAVING_GIB = 1.05, 1.2


def _f(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _within(ratio: float | None, target: float) -> str:
    return "-" if ratio is None else ("yes" if abs(ratio - 1) <= target else "no")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _step_ms(rec: Record | None) -> float | None:
    return rec.time.step_s_median * 1e3 if rec and rec.ok and rec.time.step_s_median else None


def _peak(rec: Record | None) -> float | None:
    """Torch's peak allocated on CUDA, the peak resident set above the pre-load baseline on the CPU."""
    if rec is None or not rec.ok:
        return None
    m = rec.memory
    return m.peak_allocated_bytes if rec.cuda else m.peak_rss_above_baseline_bytes


def _whole_process(rec: Record | None) -> float | None:
    m = rec.memory if rec is not None and rec.ok else None
    if m is None or m.nvml_process_peak_bytes is None or m.nvml_process_baseline_bytes is None:
        return None
    return m.nvml_process_peak_bytes + m.nvml_process_baseline_bytes


def render(plan: Plan, state: State, records: dict[str, Record], hand: HandLoop,
           expected: Callable[[Any], float]) -> str:
    """The page, from the latest record of each cell (`records`, by cell id)."""
    recs = list(records.values())
    device = next((r.device.name for r in recs if r.device.name), None)
    comparable = not plan.rehearse and device is not None and hand.device.lower() in device.lower()
    by_variant = {c.method.name: records.get(c.cell_id) for s in plan.stages for c in s.cells}
    out = [f"# GPU check{' rehearsal' if plan.rehearse else ''}: {device or 'no cell has run yet'}\n"]
    if plan.rehearse:
        out.append("A rehearsal: the stages' rows on the tiny random Llama on the CPU, to check the stages, the "
                   "budget, the bundle and the resume. Its figures are not comparable with the hand-written loop's "
                   f"({hand.device}, {hand.model}).\n")
    out += [_stages(plan, state, records, expected), _hand(hand, by_variant, comparable),
            _paged(plan, records, hand), _quantized(plan.comparison, by_variant), _model(plan, records), _selfcheck(state), _tests(state),
            _cells(plan, records, expected)]
    return "\n".join(out)


def _stages(plan: Plan, state: State, records: dict[str, Record], expected: Callable[[Any], float]) -> str:
    rows = []
    for stage in plan.stages:
        recs = [records.get(c.cell_id) for c in stage.cells]
        done = sum(1 for r in recs if r is not None and r.status in ("ok", "unsupported"))
        failed = sum(1 for r in recs if r is not None and r.status not in ("ok", "unsupported"))
        walls = ", ".join(_f(c["stages"].get(stage.name, {}).get("wall_s"), "{:.0f}") for c in state.calls) or "-"
        what = f"{done} / {len(stage.cells)} cells" if stage.cells else ""
        if stage.selfcheck is not None:
            what += "; selfcheck " + ("done" if state.selfcheck else "not run")
        outcomes = [t["outcome"] for t in state.tests.values()] if stage.tests else []
        if stage.tests:
            failed = sum(1 for o in outcomes if o not in ("passed", "skipped"))
            what = f"{len(outcomes)} tests run" if outcomes else "not run"
        complete = (done + failed == len(stage.cells) and (stage.selfcheck is None or bool(state.selfcheck))
                    and (not stage.tests or bool(outcomes)))
        last = next((c["stages"][stage.name] for c in reversed(state.calls) if stage.name in c["stages"]), None)
        if complete:
            status = f"done, {failed} failed" if failed else "done"
        else:
            status = (last or {}).get("stopped") or "not reached yet"
        rows.append([str(stage.number), stage.title, what, walls, status])
    calls = [f"call {i + 1}: started {c.get('started_at')}, budget {c.get('budget_s'):.0f} s, wall "
             f"{_f(c.get('wall_s'), '{:.0f}')} s: {c.get('ended') or 'did not end (killed?)'}" for i, c in enumerate(state.calls)]
    left = [c for s in plan.stages for c in s.cells
            if (r := records.get(c.cell_id)) is None or r.status not in ("ok", "unsupported")]
    rest = (f"Left to run: {len(left)} cell(s), about {sum(expected(c) for c in left):.0f} s by the plan; call "
            "again into the same folder to resume (cells recorded ok are skipped)." if left else "Every cell has run.")
    return ("## Stages (wall seconds per call)\n\n"
            + _table(["stage", "what", "done", "wall s by call", "state"], rows)
            + "\n" + "\n".join(f"- {c}" for c in calls) + f"\n\n{rest}\n")


def _hand(hand: HandLoop, by_variant: dict[str, Record | None], comparable: bool) -> str:
    rows = []
    for row in hand.rows:
        rec = by_variant.get(row.variant)
        step, peak = _step_ms(rec), _peak(rec)
        nvml = _whole_process(rec)
        step_ratio = _ratio(step, row.step_ms) if comparable else None
        peak_ratio = _ratio(peak, row.torch_peak_mib * MIB) if comparable else None
        status = rec.status if rec else "not run"
        rows.append([row.variant, status, _f(step), _f(row.step_ms), _f(step_ratio, "{:.3f}"),
                     _within(step_ratio, STEP_TARGET), _f(peak / MIB if peak else None, "{:,.0f}"),
                     f"{row.torch_peak_mib:,}", _f(peak_ratio, "{:.3f}"), _within(peak_ratio, PEAK_TARGET),
                     _f(nvml / MIB if nvml else None, "{:,.0f}"), f"{row.nvml_process_mib:,}"])
    note = ("" if comparable else "\nNot comparable here (another device, or a rehearsal): the ratios are left out.\n")
    return (f"## Against the hand-written loop ({hand.device}, {hand.model}, seen {hand.seen})\n\n"
            "Targets: median step time within 2%, torch's peak allocated within 1%. NVML's process figure is the "
            "whole process's, as the hand loop's (the record's peak above its pre-load baseline, plus that "
            "baseline: the CUDA context and libraries).\n\n"
            + _table(["row", "status", "step ms", "hand ms", "ratio", "within 2%", "torch peak MiB", "hand MiB",
                      "ratio", "within 1%", "NVML process MiB", "hand NVML MiB"], rows)
            + note + "\nWhat the harness does differently on every row:\n"
            + "".join(f"- {d}\n" for d in hand.differences))


def _paged(plan: Plan, records: dict[str, Record], hand: HandLoop) -> str:
    rows = []
    for c in (c for s in plan.stages for c in s.cells):
        rec = records.get(c.cell_id)
        if rec is None or not rec.ok or not is_paged(rec.optimizer.name):
            continue
        m, o = rec.memory, rec.optimizer
        beyond = (m.nvml_device_peak_bytes - m.nvml_process_peak_bytes
                  if m.nvml_device_peak_bytes is not None and m.nvml_process_peak_bytes is not None else None)
        rows.append([c.method.name, _f((o.state_bytes_managed or 0) / MIB, "{:,.0f}"),
                     _f(beyond / MIB if beyond is not None else None, "{:,.0f}"),
                     _f(m.nvml_device_peak_bytes / MIB if m.nvml_device_peak_bytes is not None else None, "{:,.0f}"),
                     _f(m.peak_allocated_bytes / MIB if m.peak_allocated_bytes is not None else None, "{:,.0f}"),
                     o.paged_note or ""])
    if not rows:
        return "## Paged optimizers\n\nNo paged-optimizer cell has run yet.\n"
    seen = "".join(f"; the hand loop's {r.variant} saw the device rise {r.nvml_device_rise_mib:,} MiB against "
                   f"{r.nvml_process_mib:,} MiB for the process" for r in hand.rows if r.nvml_device_rise_mib)
    return ("## Paged optimizers\n\nTheir state lives in CUDA managed memory, which torch's counters do not see: the "
            "record's managed bytes against what NVML's device figure holds beyond the process figure (both above "
            f"the pre-load baseline{seen}).\n\n" + _table(["row", "managed MiB (record)", "NVML device - process MiB", "NVML device MiB",
                                      "torch peak MiB", "note"], rows))


def _quantized(rows: dict[str, str], by_variant: dict[str, Record | None]) -> str:
    twin, kept, prepared = (by_variant.get(rows[k]) for k in ("unquantized", "quantized", "prepared"))
    lines = ["## QLoRA against LoRA\n"]
    ratio = _ratio(_step_ms(kept), _step_ms(twin))
    saving = (_peak(twin) - _peak(kept)) / GIB if _peak(twin) is not None and _peak(kept) is not None else None
    lines.append(f"- {rows['quantized']} against {rows['unquantized']}: step-time ratio {_f(ratio, '{:.3f}')} "
                 f"(target at most {QLORA_STEP_TARGET}), peak {_f(saving, '{:.2f}')} GiB below (target at least "
                 f"{QLORA_SAVING_GIB} GiB)")
    cost = _ratio(_step_ms(prepared), _step_ms(kept))
    extra = (_peak(prepared) - _peak(kept)) / GIB if _peak(prepared) is not None and _peak(kept) is not None else None
    lines.append(f"- prepare_model_for_kbit_training's cost, {rows['prepared']} against {rows['quantized']}: "
                 f"step-time ratio {_f(cost, '{:.3f}')}, peak {_f(extra, '{:+.2f}')} GiB")
    return "\n".join(lines) + "\n"


def _model(plan: Plan, records: dict[str, Record]) -> str:
    rows, ratios = [], []
    for c in (c for s in plan.stages for c in s.cells):
        rec = records.get(c.cell_id)
        if rec is None or not rec.ok:
            continue
        peak = headline_peak(rec)
        measured = None if math.isnan(peak.bytes) else peak.bytes
        predicted = predicted_headline(rec.memory.predicted.to_json(), rec.cuda)
        predicted = None if math.isnan(predicted) else predicted
        ratio = _ratio(predicted, measured)
        if ratio is not None:
            ratios.append(ratio)
        rows.append([c.method.name, _f(predicted / GIB if predicted else None, "{:.2f}"),
                     _f(measured / GIB if measured else None, "{:.2f}"), peak.source, _f(ratio, "{:.3f}"),
                     _within(ratio, MODEL_TARGET)])
    if not rows:
        return "## The memory model\n\nNo cell has a measured peak yet.\n"
    worst = max(ratios, key=lambda r: abs(r - 1)) if ratios else None
    cpu = not any(records[c.cell_id].cuda for s in plan.stages for c in s.cells if c.cell_id in records)
    caveat = (" On the CPU the measured figure is the resident set, which also holds the runtime's buffers and "
              "the allocator's pages, which the model does not predict: the ratio means something on CUDA." if cpu else "")
    return ("## The memory model\n\nPredicted peak against the measured headline peak (bench/results/peaks.py: on "
            "CUDA torch's peak allocated plus any managed optimizer state, predicted on the same accounting); target "
            f"within 5%. Median ratio {_f(statistics.median(ratios) if ratios else None, '{:.3f}')}, worst "
            f"{_f(worst, '{:.3f}')}.{caveat}\n\n"
            + _table(["cell", "predicted GiB", "measured GiB", "measured is", "predicted / measured", "within 5%"],
                     rows))


def _selfcheck(state: State) -> str:
    r = state.selfcheck
    if not r:
        return "## The harness's overhead\n\nNot run yet.\n"
    if r.get("error"):
        return f"## The harness's overhead\n\n{r['cell']}: {r['error']}\n"
    rounds = ", ".join(f"{x:.4f}" for x in r["step_ratios"])
    return (f"## The harness's overhead\n\n{r['cell']}, {r['rounds']} round(s) of a bare loop against the harness, "
            f"each in a fresh process: step-time ratio {r['step_ratio']:.4f} (rounds: {rounds}; target within 2%), "
            f"{r['peak_kind']} difference {r['peak_diff'] * 100:+.2f}% (target within 1%).\n")


def _tests(state: State) -> str:
    if not state.tests:
        return "## GPU tests\n\nNot run yet.\n"
    counts: dict[str, int] = {}
    for t in state.tests.values():
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    failed = [f"- {node}: {t.get('message') or t['outcome']}" for node, t in state.tests.items()
              if t["outcome"] not in ("passed", "skipped")]
    return ("## GPU tests\n\n" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + " (pytest.log has the "
            "output)\n" + ("\n" + "\n".join(failed) + "\n" if failed else ""))


def _cells(plan: Plan, records: dict[str, Record], expected: Callable[[Any], float]) -> str:
    rows = []
    for stage in plan.stages:
        for c in stage.cells:
            rec = records.get(c.cell_id)
            if rec is None:
                rows.append([str(stage.number), c.name, "not run", "-", "-", "-", f"expected {expected(c):.0f} s"])
                continue
            error = (rec.error or "").splitlines()[0][:160] if rec.error else ""
            rows.append([str(stage.number), c.name, str(rec.status), _f(rec.time.setup_s), _f(_step_ms(rec)),
                         _f(rec.duration_s), error])
    return "## Cells\n\n" + _table(["stage", "cell", "status", "setup s", "step ms", "duration s", "note"], rows)
