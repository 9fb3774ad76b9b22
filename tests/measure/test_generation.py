"""Accuracy by generation: the answer taken from the output, left-padded batches decoded as each row
alone would be, the loss on the target tokens only, and every method able to generate."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.catalog.batches import IGNORE
from bench.measure.accuracy import evaluate
from bench.measure.generation import extract_answer, generate, greedy, normalize
from bench.registry import load_methods
from tests.helpers import built


@pytest.mark.parametrize("text, answer", [
    (" 3 - 2 = 1. 1 + 10 = 11. The answer is 11.", "11"),
    (" The answer is 1,234.", "1234"),
    ("The answer is: $42", "42"),
    (" 5 + 2 = 7. 7 * 3 = 21", "21"),  # no sentence: the last number
    (" 10\n\nThe answer is 10.\n\nQuestion: Tom has 4 pens.", "10"),  # not from the next problem
    (" Let me think.\n\nShe has 3 + 4 = 7.\n\nThe answer is 7.", "7"),  # a later paragraph counts
    (" The answer is .5", "0.5"),
    (" The answer is 12.5", "12.5"),
    (" The answer is -3.50.", "-3.5"),
    (" The answer is 12.0", "12"),
    (" I do not know.", None),
])
def test_the_answer_is_the_stated_one_else_the_last_number(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_numbers_compare_as_written_in_gsm8k() -> None:
    assert normalize("1,000") == normalize("1000") == "1000" and normalize("7.") == "7"


@pytest.mark.parametrize("method", ["full", "prompt_tuning", "prefix_tuning"])  # generate, and the peft decoder
def test_a_left_padded_batch_generates_what_each_row_generates_alone(method: str) -> None:
    b = built(method, task="arith", seq_len=160)
    torch.manual_seed(0)
    b.model.eval()
    tok, decode = b.batcher.tok, b.plan.method.generate
    prompts = [b.batcher.prompt(ex) for ex in b.plan.task.test[:5]]
    assert len({len(p) for p in prompts}) > 1  # rows of different lengths: the batch is padded
    with torch.inference_mode():
        batch = generate(b.model, prompts, tok.pad_id, tok.eos_id, 12, torch.device("cpu"), decode)
        alone = [generate(b.model, [p], tok.pad_id, tok.eos_id, 12, torch.device("cpu"), decode)[0] for p in prompts]
    assert batch == alone
    assert all(len(r) > 0 for r in batch)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_the_prompt_learning_decoder_computes_the_forward_at_every_step(method: str) -> None:
    """Each generated token's logits equal those of one forward through peft's model over the prompt
    and the tokens before it, and the virtual tokens matter: the base model alone decodes otherwise."""
    b = built(method, task="arith", seq_len=160)
    b.model.eval()
    prompt = b.batcher.prompt(b.plan.task.test[0])
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = b.plan.method.generate(b.model, ids, torch.ones_like(ids),
                                     greedy(8, None, [], output_logits=True, return_dict_in_generate=True))
        new = out.sequences[0, len(prompt):].tolist()
        assert len(new) == len(out.logits) == 8
        whole = torch.tensor([prompt + new[:-1]])
        forward = b.model(input_ids=whole, attention_mask=torch.ones_like(whole)).logits[0, -len(new):]
        base = b.model.get_base_model()(input_ids=whole).logits[0, -len(new):]
    steps = torch.stack([step[0] for step in out.logits])
    assert torch.allclose(steps, forward, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(steps, base, atol=1e-2)  # what a decoder that lost the virtual tokens computes


def test_decoding_that_loses_the_prefix_is_refused_before_anything_is_scored() -> None:
    """The check behind every generative score: a decoder that does not compute the forward (here the
    base model's own generate, which knows nothing of the prefix) is `unsupported`."""
    from bench.errors import UnsupportedError

    b = built("prefix_tuning", task="arith", seq_len=160)

    def without_prefix(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, config: object) -> object:
        return model.get_base_model().generate(input_ids=ids, attention_mask=mask, generation_config=config)

    with pytest.raises(UnsupportedError, match="decoding does not compute this model's forward"):
        evaluate(b.model, b.batcher, b.plan.task.test[:2], 2, torch.device("cpu"),
                            lambda: torch.autocast("cpu", enabled=False), 4, without_prefix)


def test_training_rows_put_the_loss_on_the_target_only() -> None:
    b = built("full", task="arith", seq_len=256)  # byte tokens: the longest prompt and target fit
    ex = b.plan.task.train[0]
    enc = b.batcher.encode(ex)
    prompt = b.batcher.prompt(ex)
    assert enc.input_ids[:len(prompt)] == prompt and enc.labels[:len(prompt)] == [IGNORE] * len(prompt)
    target = enc.labels[len(prompt):]
    assert target == enc.input_ids[len(prompt):] and target[-1] == b.batcher.tok.eos_id
    assert b.batcher.tok.decode(target) == " " + ex.target
    # the model's loss is the cross-entropy of the target tokens alone, rows of different lengths padded
    batch = b.batcher.collate([b.batcher.encode(e) for e in b.plan.task.train[:3]], torch.device("cpu"), "longest")
    b.model.eval()
    with torch.no_grad():
        out = b.model(**batch)
        logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
        keep = labels != IGNORE
        mine = F.cross_entropy(logits[keep], labels[keep])
    assert float(out.loss) == pytest.approx(float(mine), rel=1e-5)
    assert int(keep.sum()) == sum(len(b.batcher.encode(e).input_ids) - len(b.batcher.prompt(e))
                                  for e in b.plan.task.train[:3])


def test_demonstrations_carry_their_worked_solution_and_stay_out_of_the_loss() -> None:
    b = built("icl", task="arith", seq_len=1000, options={"shots": 2})
    ex = b.plan.task.test[0]
    text = b.batcher.tok.decode(b.batcher.prompt(ex))
    for demo in b.batcher.demos:
        assert demo.text in text and demo.target in text
    assert text.endswith(f"Question: {ex.text}\nAnswer:")


@pytest.mark.parametrize("method", list(load_methods()))
def test_every_method_is_scored_by_generation_on_a_causal_lm(method: str) -> None:
    b = built(method, task="arith", seq_len=1000)  # room for in-context learning's 4 worked demonstrations
    out = evaluate(b.model, b.batcher, b.plan.task.test[:4], 4, torch.device("cpu"),
                              lambda: torch.autocast("cpu", enabled=False), 6, b.plan.method.generate)
    assert out["eval_examples"] == 4 and 0 <= out["accuracy"] <= 1
    assert 0 < out["generated_tokens"] <= 4 * 6 and out["generated_tokens_per_s"] > 0
    assert [s["answer"] for s in out["samples"]] == [e.answer for e in b.plan.task.test[:3]]


def test_an_encoder_cannot_take_a_generative_task() -> None:
    from bench.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="needs a causal LM"):
        built("full", model="tiny-bert", task="arith")
