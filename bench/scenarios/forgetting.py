"""Forgetting: the mean per-token loss of a causal LM on held-out general text, before and after
fine-tuning (the difference is the forgetting figure, as in peft's method comparison).

The text is a local UTF-8 file (BENCH_GENERAL_TEXT), else, when the hub is reachable and the
`datasets` package installed, the test split of wikitext-2-raw-v1, else the public-domain text that
ships with the suite (bench/data/general), so a fresh machine offline has the figure too. The runner
chooses it once per run (`choose_text`, in env.json with the reason for any fallback) and hands the
choice to every cell (CHOICE_ENV), so no two cells of a run score different texts; a cell run
without the runner chooses for itself. No text is a null figure with a note; a cell that cannot read
the text its run chose fails, rather than score another. The text is cut into rows of the cell's
seq_len, at most MAX_TOKENS tokens, so it stays cheap.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

from bench.errors import BenchError
from bench.exec.environment import hub_reachable
from bench.results.record import Quality

TEXT_ENV = "BENCH_GENERAL_TEXT"
CHOICE_ENV = "BENCH_GENERAL_TEXT_CHOICE"  # the run's choice (TextChoice as JSON), from the runner to its cells
HUB_COPY = "general_text.txt"  # the runner's copy of a hub text in the run folder: its cells read it, not the hub
MAX_TOKENS = 16_384
WIKI = ("wikitext", "wikitext-2-raw-v1", "test")
LOGITS_BUDGET_BYTES = 256 * 2**20  # fp32 logits of one forward: bounds rows x seq_len x vocab


@functools.lru_cache(maxsize=4)
def load_text(path: str | None) -> tuple[str | None, str]:
    """(text, where it came from), or (None, why there is none): the file given, else wikitext-2
    from the hub, else the text shipped with the suite (bench/data/general)."""
    if path:
        text, why = _read_file(path)
        return (text, f"file:{path}") if text is not None else (None, why)
    text, why = _wikitext()
    if text is not None:
        return text, why
    return shipped_text()


def _read_file(path: str) -> tuple[str | None, str]:
    try:
        return Path(path).read_text(encoding="utf-8"), f"file:{path}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"general text {path!r} unreadable ({type(exc).__name__}: {exc})"


def _wikitext() -> tuple[str | None, str]:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None, "the hub is off (HF_HUB_OFFLINE)"
    try:
        import datasets
    except ImportError:
        return None, "the 'datasets' package is missing"
    if not hub_reachable():
        return None, "huggingface.co is unreachable"
    try:
        rows = datasets.load_dataset(WIKI[0], WIKI[1], split=WIKI[2])
    except Exception as exc:  # noqa: BLE001 - any hub failure falls back to the shipped text
        return None, f"{'/'.join(WIKI)} failed to load ({type(exc).__name__})"
    return "".join(r["text"] for r in rows), f"hub:{'/'.join(WIKI)}"


SHIPPED = "data/general/sherlock-holmes-i-ii.txt.gz"
SHIPPED_SHA256 = "fcb69889d6df295a1b62f58ba302ac5c2d9ea523973aec4ff2e505daee0dbbd3"


def shipped_text() -> tuple[str | None, str]:
    """The public-domain text that ships with the suite, checked against its checksum."""
    import gzip
    from importlib import resources

    try:
        raw = gzip.decompress(resources.files("bench").joinpath(SHIPPED).read_bytes())
    except (OSError, EOFError) as exc:
        return None, f"no general text: the shipped {SHIPPED} is unreadable ({type(exc).__name__})"
    if hashlib.sha256(raw).hexdigest() != SHIPPED_SHA256:
        return None, f"no general text: the shipped {SHIPPED} does not match its checksum (a damaged installation)"
    return raw.decode("utf-8"), f"packaged:{SHIPPED} (Doyle, public domain; see bench/data/general/README.md)"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TextChoice:
    """The run's general text (env.json `general_text`)."""

    source: str | None  # file:PATH | hub:wikitext/... | packaged:... (quality.general_text); None: no text
    sha256: str | None = None  # of its UTF-8 bytes: each cell checks it read the text the run chose
    path: str | None = None  # what cells read: the file given, or the run's copy of a hub text; None: the shipped one
    fallback_reason: str | None = None  # why not the text preferred; with no text, why none

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextChoice:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


def choose_text(run_dir: Path) -> TextChoice:
    """The run's general text, chosen once before any cell runs: BENCH_GENERAL_TEXT (unreadable: an
    error, before any cell), else wikitext-2 from the hub (copied into the run folder, so the cells
    read that copy and not the hub), else the shipped text, with the reason it fell back."""
    given = os.environ.get(TEXT_ENV)
    if given:
        text, why = _read_file(given)
        if text is None:
            raise BenchError(f"{TEXT_ENV}={given!r}: {why}; point it at a readable UTF-8 file, or unset it "
                             "(then wikitext-2 from the hub, else the text shipped in bench/data/general)")
        return TextChoice(f"file:{given}", _sha256(text), str(Path(given).resolve()))
    text, source = _wikitext()
    if text is not None:
        copy = Path(run_dir).resolve() / HUB_COPY
        copy.write_text(text, encoding="utf-8")
        return TextChoice(source, _sha256(text), str(copy))
    fallback = f"wikitext-2 not used: {source}"
    text, source = shipped_text()
    if text is None:
        return TextChoice(None, fallback_reason=f"{fallback}; {source}")
    return TextChoice(source, _sha256(text), None, fallback)


def load_chosen(choice: TextChoice) -> tuple[str | None, str]:
    """(the text the run chose, its source), or (None, why the run has none). Raises BenchError where
    this cell cannot read that very text (checked by its sha256): a cell falling back on its own
    would score another text than the run's other cells."""
    if choice.source is None:
        return None, choice.fallback_reason or "no general text"
    text, why = _read_file(choice.path) if choice.path is not None else shipped_text()
    if text is not None and _sha256(text) != choice.sha256:
        why = f"it changed since the run chose it (sha256 {_sha256(text)[:12]}, not {str(choice.sha256)[:12]})"
        text = None
    if text is None:
        raise BenchError(f"the run's general text {choice.source} (env.json general_text) cannot be used in this "
                         f"cell: {why}")
    return text, choice.source


def cell_text() -> tuple[str | None, str]:
    """The text the runner chose for the run (CHOICE_ENV), else, for a cell run without the runner,
    one chosen here: (text, source), or (None, why there is none)."""
    given = os.environ.get(CHOICE_ENV)
    if not given:
        return load_text(os.environ.get(TEXT_ENV) or None)
    return load_chosen(TextChoice.from_json(json.loads(given)))


def chunks(ids: list[int], seq_len: int, max_tokens: int = MAX_TOKENS) -> list[list[int]]:
    """Whole rows of seq_len tokens, at most max_tokens in all; one shorter row if the text is short."""
    rows = min(len(ids) // seq_len, max(1, max_tokens // seq_len))
    if rows == 0:
        return [ids] if len(ids) >= 2 else []
    return [ids[i * seq_len:(i + 1) * seq_len] for i in range(rows)]


def general_loss(model: Any, tok: Any, text: str, seq_len: int, rows_per_forward: int, device: Any,
                 autocast: Callable[[], ContextManager[Any]], max_tokens: int = MAX_TOKENS) -> tuple[float, int]:
    """(mean loss per predicted token, tokens predicted) over the text's first rows."""
    import torch

    ids = tok.encode(text[: max_tokens * 16], True)  # enough characters for max_tokens tokens
    rows = chunks(ids, seq_len, max_tokens)
    if not rows:
        raise ValueError("the general text has fewer than two tokens")
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    if vocab:
        rows_per_forward = max(1, min(rows_per_forward, LOGITS_BUDGET_BYTES // (4 * vocab * len(rows[0]))))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode(), autocast():
            for i in range(0, len(rows), rows_per_forward):
                batch = torch.tensor(rows[i:i + rows_per_forward], device=device)
                loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
                n = batch.shape[0] * (batch.shape[1] - 1)  # the model shifts: every token but the first
                total, count = total + float(loss) * n, count + n
    finally:
        model.train(was_training)
    return total / count, count


class Forgetting:
    """Measures before training and after; fills the record's quality fields."""

    def __init__(self, quality: Quality, kind: str, trains: bool, random_weights: bool, settings: Any) -> None:
        self.quality = quality
        self.text: str | None = None
        note = None
        if kind != "causal":
            note = "general-text loss is for causal LMs only"
        elif settings.eval_examples == 0:
            note = "evaluation off (eval_examples = 0)"
        elif not trains:
            note = "the method trains nothing: nothing to forget"
        else:
            self.text, source = cell_text()
            if self.text is None:
                note = source
            else:
                quality.general_text = source
                if random_weights:
                    note = "random weights: the figure exercises the harness, it says nothing about forgetting"
        quality.forgetting_note = note

    def measure(self, when: str, model: Any, tok: Any, settings: Any, device: Any,
                autocast: Callable[[], ContextManager[Any]]) -> None:
        if self.text is None:
            return
        try:
            loss, tokens = general_loss(model, tok, self.text, settings.seq_len, settings.eval_batch_size, device,
                                        autocast, settings.general_tokens)
        except Exception as exc:  # noqa: BLE001 - out of memory or an odd model: a note, not a failed cell
            self.text = None
            self.quality.set(forgetting_note=f"general-text loss failed {when} training ({type(exc).__name__}: {exc})",
                             general_loss_before=None, general_loss_after=None, forgetting=None)
            return
        self.quality.set(**{f"general_loss_{when}": loss}, general_tokens=tokens)
        if when == "after" and self.quality.general_loss_before is not None:
            self.quality.forgetting = loss - self.quality.general_loss_before
