"""Forgetting: the mean per-token loss of a causal LM on held-out general text, before and after
fine-tuning (the difference is the forgetting figure, as in peft's method comparison).

The text is a local UTF-8 file (BENCH_GENERAL_TEXT), else, when the hub is reachable and the
`datasets` package installed, the test split of wikitext-2-raw-v1, else the public-domain text that
ships with the suite (bench/data/general), so a fresh machine offline has the figure too. A missing
figure is a null with a note: never a failed cell. The text is
cut into rows of the cell's seq_len, at most MAX_TOKENS tokens, so it stays cheap.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, ContextManager

from bench.exec.environment import hub_reachable
from bench.results.record import Quality

TEXT_ENV = "BENCH_GENERAL_TEXT"
MAX_TOKENS = 16_384
WIKI = ("wikitext", "wikitext-2-raw-v1", "test")
LOGITS_BUDGET_BYTES = 256 * 2**20  # fp32 logits of one forward: bounds rows x seq_len x vocab


@functools.lru_cache(maxsize=4)
def load_text(path: str | None) -> tuple[str | None, str]:
    """(text, where it came from), or (None, why there is none): the file given, else wikitext-2
    from the hub, else the text shipped with the suite (bench/data/general)."""
    if path:
        try:
            return Path(path).read_text(encoding="utf-8"), f"file:{path}"
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"general text {path!r} unreadable ({type(exc).__name__}: {exc})"
    text, why = _wikitext()
    if text is not None:
        return text, why
    return shipped_text()


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
    import hashlib
    from importlib import resources

    try:
        raw = gzip.decompress(resources.files("bench").joinpath(SHIPPED).read_bytes())
    except (OSError, EOFError) as exc:
        return None, f"no general text: the shipped {SHIPPED} is unreadable ({type(exc).__name__})"
    if hashlib.sha256(raw).hexdigest() != SHIPPED_SHA256:
        return None, f"no general text: the shipped {SHIPPED} does not match its checksum (a damaged installation)"
    return raw.decode("utf-8"), f"packaged:{SHIPPED} (Doyle, public domain; see bench/data/general/README.md)"


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
            self.text, source = load_text(os.environ.get(TEXT_ENV) or None)
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
