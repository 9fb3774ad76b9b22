"""What bitsandbytes' CPU kernels and a quantized load hold on the CPU, against the memory model.

- A forward's net allocation (what it leaves for the backward, counted by torch's profiler, so no
  allocator is involved) equals the predicted saved activations of BERT-style encoders with LoRA on
  a plain, a 4-bit and an 8-bit base: the 8-bit CPU path (MatMul8bitFp) keeps each 8-bit linear's
  input, which autograd's saved-tensor hooks never see (it is a ctx attribute); the 4-bit one keeps
  only the packed weight.
- A quantized load from a safetensors checkpoint keeps the checkpoint's pages of the weights it
  quantized resident in the process (the file stays mapped while unquantized parameters view it).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from bench import build
from bench.predict import predict
from tests.helpers import cell

LORA = {"r": 4, "target_modules": ["query", "key", "value", "dense"]}
SHAPE = dict(batch_size=8, seq_len=64)


def _forward_net_bytes(c) -> int:
    """Bytes a training forward allocates and leaves allocated (what it keeps for the backward, the
    loss and the logits), from the profiler's allocation events."""
    b = build.build(build.plan(c, torch.device("cpu")))
    batch = next(iter(b.batcher.train_batches(c.settings.batch_size, 1, 0, torch.device("cpu"))))
    b.model.train()
    b.model(**batch).loss.backward()  # first use: bitsandbytes moves its int8 state into place
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = b.model(**batch).loss
    del loss
    return sum(e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")


@pytest.mark.parametrize("method", ["lora", "qlora", "int8_lora"])
def test_encoder_forward_keeps_what_the_model_predicts(method: str) -> None:
    c = cell(method, model="tiny-bert", task="mr", options=LORA, **SHAPE)
    predicted = predict(c, "cpu")["detail"]["saved_bytes"]
    assert _forward_net_bytes(c) == pytest.approx(predicted, rel=0.05)


def test_the_8bit_cpu_path_keeps_each_linears_input() -> None:
    lora, int8 = (predict(cell(m, model="tiny-bert", task="mr", options=LORA, **SHAPE), "cpu")["detail"]["saved_bytes"]
                  for m in ("lora", "int8_lora"))
    # per layer but the first (whose q, k, v input needs no gradient): the q/k/v input, o's, up's
    # (hidden wide) and down's (intermediate wide), fp32
    tokens, hidden, inter = 8 * 64, 64, 128
    assert int8 - lora == tokens * 4 * (3 * hidden + inter) + tokens * 4 * (2 * hidden + inter)
    assert predict(cell("int8_lora", model="tiny-bert", task="mr", options=LORA, **SHAPE),
                   "cuda")["detail"]["saved_bytes"] < int8  # CUDA's MatMul8bitLt is not modelled so


_MAPPED = """
import re, sys, torch
from bench import build
from bench.predict import predict
from tests.helpers import cell
c = cell("qlora", model="minilm-l6", task="mr", options={"r": 4})
build.build(build.plan(c, torch.device("cpu")))
kib, name = 0, None
for line in open("/proc/self/smaps"):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        name = line.split()[-1]
    elif line.startswith("Rss:") and name.endswith(".safetensors"):
        kib += int(line.split()[1])
mapped = [predict(c, device)["detail"]["mapped_checkpoint_bytes"] for device in ("cpu", "cuda")]
print(kib * 1024, *mapped)
"""


def test_a_quantized_load_keeps_the_checkpoints_pages_of_its_weights() -> None:
    out = subprocess.run([sys.executable, "-c", _MAPPED], capture_output=True, text=True, check=True)
    resident, predicted, on_cuda = map(int, out.stdout.split()[-3:])
    # MiniLM-L6's quantized linears in fp32: per layer 4 x 384^2 + 2 x 384 x 1536, and the pooler's 384^2
    assert predicted == (6 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 384) * 4
    assert resident == pytest.approx(predicted, rel=0.15)
    assert on_cuda == 0  # torch's CUDA counters never see host pages
