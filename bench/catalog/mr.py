"""The movie-review polarity task (Pang & Lee, 2005): the sentences shipped in bench/data/mr, another
copy of the rt-polarity files, or the hub's rotten_tomatoes."""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

from bench.catalog.tasks import Example, Task, make_task, register_task, text_sha256
from bench.errors import BenchError, UnsupportedError, require

# Pang & Lee's sentence polarity dataset v1.0, shipped gzipped in bench/data/mr (see its README.md).
MR_FILES = {"rt-polarity.neg": 0, "rt-polarity.pos": 1}  # file -> label
MR_SHA256 = {"rt-polarity.neg": "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca",
             "rt-polarity.pos": "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0"}
MR_PACKAGED = "data/mr"  # inside the bench package
MR_HUB_ID = "cornell-movie-review-data/rotten_tomatoes"
INSTRUCTION = "Classify the sentiment of this movie review as positive or negative."
MrSource = Literal["packaged", "hub", "dir"]
MR_SOURCES = get_args(MrSource)


@register_task("mr")
@dataclass(frozen=True)
class MovieReviewOptions:
    """Movie-review sentence polarity (Pang & Lee 2005): 5,331 positive and 5,331 negative sentences.

    source = "packaged" (default): the copy shipped in bench/data/mr, no network needed.
    source = "dir": rt-polarity.pos and rt-polarity.neg in `data_dir` (another version is allowed;
    its checksums are recorded). Both go through one fixed split: within each class, sentences in
    order of (sha256 of the sentence, line number); the first tenth (rounded down) is test, the
    next tenth validation, the rest train (8,530 / 1,066 / 1,066, balanced); each split is then
    ordered by (sha256 of the sentence, label), so classes are mixed and the first eval_examples
    test sentences are a fair subset.
    source = "hub": the hub dataset `hub_id` with its own splits, each ordered the same way.
    """

    source: MrSource = "packaged"
    data_dir: str | None = None
    hub_id: str = MR_HUB_ID

    def __post_init__(self) -> None:
        choices = ", ".join(repr(s) for s in MR_SOURCES)
        if self.source == "dir":
            require(self.data_dir is not None, "data_dir", self.data_dir,
                           "required with source = 'dir' (a folder holding rt-polarity.pos and rt-polarity.neg)")
        require(self.data_dir is None or self.source == "dir", "data_dir", self.data_dir,
                       f"is used only with source = 'dir', but source = {self.source!r} "
                       f"(valid choices for source: {choices})")
        require(self.hub_id == MR_HUB_ID or self.source == "hub", "hub_id", self.hub_id,
                       f"is used only with source = 'hub', but source = {self.source!r} "
                       f"(valid choices for source: {choices})")

    def load(self) -> Task:
        if self.source == "hub":
            return _mr_hub(self.hub_id)
        if self.source == "dir":
            return _mr_dir(Path(self.data_dir))
        return _mr_packaged()


def _mr_packaged() -> Task:
    files: dict[str, bytes] = {}
    for name in MR_FILES:
        where = f"bench/{MR_PACKAGED}/{name}.gz"
        try:
            raw = gzip.decompress(resources.files("bench").joinpath(f"{MR_PACKAGED}/{name}.gz").read_bytes())
        except (OSError, EOFError) as exc:
            raise BenchError(f"mr: cannot read the packaged {where} ({exc}): the installation is damaged; "
                             "reinstall ft-bench") from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest != MR_SHA256[name]:
            raise BenchError(f"mr: the packaged {where} has sha256 {digest}, expected {MR_SHA256[name]}: "
                             "the installation is damaged; reinstall ft-bench")
        files[name] = raw
    return _mr_split(files, f"packaged:bench/{MR_PACKAGED}")


def _mr_dir(folder: Path) -> Task:
    files: dict[str, bytes] = {}
    for name in MR_FILES:
        path = folder / name
        if not path.is_file():
            raise UnsupportedError(f"mr: {path} not found (source = 'dir' needs data_dir to hold "
                                   f"{' and '.join(MR_FILES)})")
        files[name] = path.read_bytes()
    return _mr_split(files, f"dir:{folder.resolve()}")


def _mr_split(files: dict[str, bytes], source: str) -> Task:
    """Split rt-polarity files (latin-1, one sentence a line) as MovieReviewOptions describes."""
    train: list[tuple[str, int, int, str]] = []  # (sha256, label, line number, text)
    validation: list[tuple[str, int, int, str]] = []
    test: list[tuple[str, int, int, str]] = []
    for name, raw in files.items():
        label = MR_FILES[name]
        rows = sorted((text_sha256(text), label, number, text)
                      for number, line in enumerate(raw.decode("latin-1").split("\n"), 1)
                      if (text := line.strip()))
        if len(rows) < 10:
            raise UnsupportedError(f"mr: {name} has {len(rows)} sentences; the split needs at least 10 per class")
        tenth = len(rows) // 10
        test += rows[:tenth]
        validation += rows[tenth:2 * tenth]
        train += rows[2 * tenth:]
    splits = tuple([Example(text, label) for _, label, _, text in sorted(part)] for part in (train, validation, test))
    digests = {name: hashlib.sha256(raw).hexdigest() for name, raw in files.items()}
    return make_task("mr", splits, True, source, INSTRUCTION, files_sha256=digests,
                      files_match_published=digests == MR_SHA256)


def _mr_hub(hub_id: str) -> Task:
    try:
        import datasets
    except ImportError:
        raise UnsupportedError("mr: source = 'hub' needs the 'datasets' package: pip install '.[hub]', "
                               "or use source = 'packaged' (the default, no network)") from None
    try:
        ds = datasets.load_dataset(hub_id)
    except (OSError, ConnectionError, ValueError) as exc:  # offline, or the hub unreachable
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedError(f"mr: the hub dataset {hub_id!r} could not be loaded ({first}); offline, "
                               "use source = 'packaged' (the default) or source = 'dir'") from None

    def ordered(name: str) -> list[Example]:  # class-mixed, so eval_examples takes a fair subset
        rows = [Example(r["text"], int(r["label"])) for r in ds[name]]
        return sorted(rows, key=lambda ex: (text_sha256(ex.text), ex.label))

    return make_task("mr", (ordered("train"), ordered("validation"), ordered("test")), True, f"hub:{hub_id}",
                     INSTRUCTION)
