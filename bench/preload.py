"""Imported once by the forkserver the CPU runs fork cells from (`--start-method forkserver`).

The imports (torch, transformers, peft, bitsandbytes: about 8 s on a 2-core CPU) then happen once
per matrix instead of once per cell; each cell is still its own fresh process with its own
allocator. Where a GPU is present the runner spawns instead: a forked child cannot use CUDA if an
import initialised it in the server.
"""
import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # torch.cuda.is_available() without cuInit

import torch  # noqa: E402,F401
import transformers  # noqa: E402,F401

try:
    import peft  # noqa: F401
except ImportError:
    pass

import bench.worker  # noqa: E402,F401
