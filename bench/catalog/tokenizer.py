"""Tokenizers: the model's own where it has one, a byte tokenizer for random-weight built-ins."""
from __future__ import annotations

from typing import Any, Protocol


class Tokenizer(Protocol):
    pad_id: int
    eos_id: int | None  # ends a generated answer

    def decode(self, ids: list[int]) -> str:
        """The text of generated ids, special tokens dropped."""

    def encode(self, text: str, first: bool) -> list[int]:
        """Token ids of `text`; `first` adds the special tokens that start a sequence."""

    def finish(self, ids: list[int]) -> list[int]:
        """Append the tokens that end a classification input ([SEP] for BERT)."""


class ByteTokenizer:
    """UTF-8 bytes shifted past three specials (pad 0, bos 1, eos 2); vocab 259.

    Random-weight models have no tokenizer of their own; any ids below their vocab size serve
    for memory and step time, and the byte form keeps text tasks learnable for tiny models.
    """

    pad_id, bos_id, eos_id, vocab_size = 0, 1, 2, 259

    def encode(self, text: str, first: bool) -> list[int]:
        ids = [b + 3 for b in text.encode("utf-8")]
        return [self.bos_id, *ids] if first else ids

    def finish(self, ids: list[int]) -> list[int]:
        return ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("utf-8", errors="replace")


class HFTokenizer:
    def __init__(self, tok: Any) -> None:
        self.tok = tok
        pad = tok.pad_token_id
        if pad is None:
            pad = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.eos_id = tok.eos_token_id

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def encode(self, text: str, first: bool) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        start = self.tok.cls_token_id if self.tok.cls_token_id is not None else self.tok.bos_token_id
        return [start, *ids] if first and start is not None else ids

    def finish(self, ids: list[int]) -> list[int]:
        sep = self.tok.sep_token_id
        return [*ids, sep] if sep is not None else ids


def load_tokenizer(location: Any, extra: dict[str, Any]) -> Tokenizer:
    if location is None:
        return ByteTokenizer()
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(location, **extra))
