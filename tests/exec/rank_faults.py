"""Ranks that fail as a test asks (BENCH_TEST_RANK_FAULT in the environment), run by torchrun in
place of bench.exec.rank: `die` SIGKILLs rank 1 a few seconds in (while the cell loads or trains),
`hang` has rank 1 join the process group and never reach a collective. Rank 0 runs the real rank."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from bench.exec import rank

if __name__ == "__main__":
    from bench.exec.worker import die_with_parent

    die_with_parent()
    fault = os.environ.get("BENCH_TEST_RANK_FAULT", "")
    if os.environ.get("RANK") == "1" and fault == "die":
        threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    elif os.environ.get("RANK") == "1" and fault == "hang":
        import json
        from pathlib import Path

        from bench import parallel
        from bench.spec import Cell

        parallel.init(Cell.from_json(json.loads(Path(sys.argv[1]).read_text())).settings.timeout_s)
        time.sleep(10**6)
    sys.exit(rank.main(sys.argv[1:]))
