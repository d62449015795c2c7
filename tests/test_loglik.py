"""loglik / choice scoring and calibration, checked against brute force on the tiny model."""

import pytest

from tunebench.models.loading import ModelSpec, encode_prompt, load_causal_lm, load_tokenizer
from tunebench.models.loglik import (
    calibration_prior,
    content_free_prompts,
    iter_choice,
    label_token_ids,
    loglik_scores,
    normalise,
    pick,
)

FRAME = "Instruction: Is this sentence Sarcasm or Not Sarcasm?\nInput: {}\nAnswer: "
TEXTS = ["Oh great, another Monday meeting.", "Profit rose 12 percent.", "The bank said so.",
         "Shares fell sharply in early trading as the company reported a loss.", "Fine."]
PROMPTS = [FRAME.format(t) for t in TEXTS]
LABELS = ["Sarcasm", "Not Sarcasm", "neutral", "zq xv"]  # one- and multi-token labels


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    spec = ModelSpec.from_params("tiny", {"source": "local", "path": str(tiny_model_dir)})
    model = load_causal_lm(spec, str(tiny_model_dir), quantize=False)
    return model, load_tokenizer(spec, str(tiny_model_dir))


def brute_force(model, tokenizer, prompt, label):
    import torch

    ids = encode_prompt(tokenizer, prompt)
    lab = tokenizer(label, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids + lab])).logits[0].float(), -1)
    return sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(lab))


def test_loglik_matches_brute_force_in_any_batch(tiny):
    model, tokenizer = tiny
    assert max(len(t) for t in label_token_ids(tokenizer, LABELS)) > 1
    expected = [[brute_force(model, tokenizer, p, lab) for lab in LABELS] for p in PROMPTS]
    for batch_size, share in ((1, False), (2, True), (16, True)):
        got = loglik_scores(model, tokenizer, PROMPTS, LABELS, batch_size, share, False)
        flat = [x for row in got for x in row]
        assert flat == pytest.approx([x for row in expected for x in row], abs=1e-4)


def test_choice_picks_a_label_and_follows_the_trie(tiny):
    model, tokenizer = tiny
    answers = {}
    for batch_size in (1, 3):
        for batch, got in iter_choice(model, tokenizer, PROMPTS, LABELS, batch_size,
                                      progress=False):
            for i, label in zip(batch, got, strict=True):
                assert label in LABELS
                answers.setdefault(i, set()).add(label)
    assert sorted(answers) == list(range(len(PROMPTS)))
    assert all(len(v) == 1 for v in answers.values())  # batch size does not change answers


def test_choice_equals_loglik_for_single_token_labels(tiny):
    model, tokenizer = tiny
    labels = [lab for lab, ids in zip(LABELS, label_token_ids(tokenizer, LABELS), strict=True)
              if len(ids) == 1]
    assert len(labels) >= 2
    scores = loglik_scores(model, tokenizer, PROMPTS, labels, progress=False)
    chosen = {}
    for batch, got in iter_choice(model, tokenizer, PROMPTS, labels, progress=False):
        chosen.update(zip(batch, got, strict=True))
    assert [chosen[i] for i in range(len(PROMPTS))] == [pick(s, labels) for s in scores]


def test_content_free_prompts_replace_only_the_text():
    cf = content_free_prompts(PROMPTS, ["N/A", ""])
    assert cf == [FRAME.format("N/A"), FRAME.format("")]
    with pytest.raises(ValueError):
        content_free_prompts(PROMPTS[:1])


def test_calibration_removes_a_constant_prior():
    labels = ["a", "b", "c"]
    biased = [[-0.1, -3.0, -3.2], [-0.2, -2.0, -3.0]]  # the model always prefers "a"
    prior = calibration_prior([[-0.1, -3.0, -3.0]])
    assert [pick(s, labels) for s in biased] == ["a", "a"]
    assert [pick(s, labels, prior) for s in biased] == ["a", "b"]
    assert sum(normalise([-1.0, -2.0])) == pytest.approx(1.0)
    assert pick([0.0, 0.0], ["x", "y"]) == "x"  # ties go to the earlier label


def test_labels_must_tokenize_distinctly(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match="nothing"):
        label_token_ids(tokenizer, ["a", ""])


def test_loglik_variants_and_the_label_free_choice():
    from tunebench.models.loglik import choose_variant, distribution, variant_answers

    labels = ["negative", "neutral", "positive"]
    # "neutral" has 3 tokens: its sum is low, its per-token mean is the highest.
    scores = [[-2.0, -4.5, -1.0], [-1.0, -4.2, -3.0], [-3.0, -3.6, -2.5], [-2.2, -4.0, -2.0]]
    answers = variant_answers(scores, labels, n_tokens=[1, 3, 1], prior=[0.2, 0.05, 0.75])
    assert answers["sum"] == ["positive", "negative", "positive", "positive"]
    assert answers["mean"] == ["positive", "negative", "neutral", "neutral"]
    assert answers["calibrated"][2] == "neutral"  # 0.05 prior lifts neutral
    assert distribution(answers["mean"], labels) == [0.25, 0.5, 0.25]
    train = ["neutral"] * 5 + ["negative"] * 2 + ["positive"] * 3
    best, distances = choose_variant(answers, labels, train)
    assert distances["sum"] == pytest.approx(0.5)  # never neutral: far from 50% neutral
    assert best == min(distances, key=distances.get)
    assert best != "sum"
    with pytest.raises(ValueError, match="training labels"):
        choose_variant(answers, labels, [])


def test_choose_variant_ties_keep_the_order():
    from tunebench.models.loglik import choose_variant

    same = ["a", "b"]
    best, _ = choose_variant({"sum": same, "mean": same, "calibrated": same}, ["a", "b"],
                             ["a", "b"])
    assert best == "sum"
