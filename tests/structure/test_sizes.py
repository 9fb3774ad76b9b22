"""Small files: no module of bench/ or methods/ over MAX_LINES lines."""
from __future__ import annotations

from tests.structure import source
from tests.structure.source import ROOT

MAX_LINES = 300


def test_no_module_is_over_the_limit() -> None:
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in source.modules().values()}
    assert sizes
    over = sorted((n, p) for p, n in sizes.items() if n > MAX_LINES)
    assert not over, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(
        f"  {p.relative_to(ROOT)}: {n}" for n, p in reversed(over))
