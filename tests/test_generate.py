"""Batched greedy generation: order kept, batching-invariant, only new tokens decoded."""

import hashlib

import pytest

from tunebench.models.generate import _cut_at_stop, generate, prompt_sha256
from tunebench.models.loading import ModelSpec, encode_prompt, load_causal_lm, load_tokenizer

PROMPTS = [
    "Instruction: What is the sentiment of this news? Please choose an answer from "
    "{negative/neutral/positive}.\nInput: Profit rose.\nAnswer: ",
    "Answer: ",
    "Input: The bank said the results were in line with its guidance for the year.\nAnswer: ",
    "Summary:",
    "Is this headline biased or unbiased?",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    model = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    return model, load_tokenizer(spec, str(tiny_model_dir))


def test_batching_keeps_order_and_matches_batch_of_one(tiny):
    model, tokenizer = tiny
    one = generate(model, tokenizer, PROMPTS, batch_size=1, max_new_tokens=6, progress=False)
    four = generate(model, tokenizer, PROMPTS, batch_size=4, max_new_tokens=6, progress=False)
    assert len(one) == len(PROMPTS) and one == four
    assert len(set(one)) > 1  # different prompts give different outputs, so order is tested


def test_only_new_tokens_are_decoded(tiny):
    import torch

    model, tokenizer = tiny
    ids = torch.tensor([encode_prompt(tokenizer, PROMPTS[0])])
    full = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=5, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(full[0, ids.shape[1]:], skip_special_tokens=True)
    [got] = generate(model, tokenizer, [PROMPTS[0]], max_new_tokens=5, progress=False)
    assert got == expected and "Instruction" not in got


def test_empty_input_and_bad_batch_size(tiny):
    model, tokenizer = tiny
    assert generate(model, tokenizer, [], progress=False) == []
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, tokenizer, PROMPTS, batch_size=0)


def test_stop_strings_end_each_answer(tiny):
    model, tokenizer = tiny
    full = generate(model, tokenizer, PROMPTS, max_new_tokens=8, progress=False)
    stops = ["e", "\n"]  # frequent enough in random output to trigger
    cut = generate(model, tokenizer, PROMPTS, max_new_tokens=8, stop_strings=stops,
                   progress=False)
    assert cut == [_cut_at_stop(text, stops) for text in full] and cut != full


def test_stop_strings_cut_text():
    assert _cut_at_stop("positive\nInput: more", ["\n"]) == "positive"
    assert _cut_at_stop("a###b\nc", ["\n", "###"]) == "a"
    assert _cut_at_stop("plain", None) == "plain"


def test_prompt_sha256():
    assert prompt_sha256("é") == hashlib.sha256("é".encode()).hexdigest()
    assert prompt_sha256("a") != prompt_sha256("a ")
