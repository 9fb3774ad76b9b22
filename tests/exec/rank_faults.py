"""Ranks that fail as a test asks (BENCH_TEST_RANK_FAULT in the environment), run by torchrun in
place of bench.exec.rank: `die` SIGKILLs rank 1 a few seconds in (while the cell loads or trains),
`hang` has rank 1 join the process group and never reach a collective; rank 0 runs the real rank.
`unsynced`: every rank runs the real rank, but DDP's gradient all-reduce is replaced by a hook that
keeps each rank's own gradient (the fault the DDP tests' tolerance must see)."""
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
    elif fault == "unsynced":
        import torch

        from bench import parallel

        real = parallel.prepare

        # no annotations: DDP checks them as objects, and this module's would be strings
        def keep_local(state, bucket):  # type: ignore[no-untyped-def]
            done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
            done.set_result(bucket.buffer())  # this rank's gradient, never averaged with the other's
            return done

        def unsynced(*args: object, **kwargs: object) -> object:
            model, trainable, info = real(*args, **kwargs)
            model.register_comm_hook(None, keep_local)
            return model, trainable, info

        parallel.prepare = unsynced
    sys.exit(rank.main(sys.argv[1:]))
