"""HR bias and sarcasm task files: label rules, prompts as published, few-shot rendering."""

from pathlib import Path

import pandas as pd
import pytest

from tunebench.data.format_instructions import format_instructions
from tunebench.data.label_transform import apply_label_rule
from tunebench.data.tasks import load_task, render_prompt

TASKS = Path(__file__).resolve().parents[1] / "tasks"

SARCASM_ROLE = ("You are a sarcasm detection bot for social media posts. You read a parent "
                "comment and a reply to it, and classify the reply into one of two categories:\n"
                "Sarcasm\nNot Sarcasm\n\n")
SARCASM_TAIL = ("If the reply is anything else, classify it as Not Sarcasm.\n\n"
                "Parent comment: <<<Taxes are going up again.>>>\n"
                "Reply: <<<Great, exactly what I wanted.>>>\nCategory:")
SHOTS = ("Parent comment: The new tax plan will cut rates for every income bracket.\n"
         "Reply: Oh sure, because that has always worked out so well for the rest of us.\n"
         "Category: Sarcasm\n\n"
         "Parent comment: The new tax plan will cut rates for every income bracket.\n"
         "Reply: Do you have a link to the actual bill? I'd like to read the details.\n"
         "Category: Not Sarcasm\n\n")
ROW = {"text": "Great, exactly what I wanted.", "parent": "Taxes are going up again."}


def test_sarcasm_few_shot_prompt_renders_exactly():
    task = load_task(TASKS / "sarc.yaml")
    assert render_prompt(task, ROW, few_shot=True) == SARCASM_ROLE + SHOTS + SARCASM_TAIL


def test_sarcasm_tuned_prompt_is_the_same_minus_the_examples():
    task = load_task(TASKS / "sarc.yaml")
    assert render_prompt(task, ROW) == SARCASM_ROLE + SARCASM_TAIL


def test_sarcasm_instruction_rows_carry_both_prompts():
    task = load_task(TASKS / "sarc.yaml")
    df = pd.DataFrame([{"id": "sarc:test:0", "label": "Sarcasm", **ROW}])
    rows, _ = format_instructions(task, df, cap=None, seed=0)
    assert rows[0]["prompt_base"] == SARCASM_ROLE + SHOTS + SARCASM_TAIL
    assert rows[0]["prompt"] == SARCASM_ROLE + SARCASM_TAIL
    assert rows[0]["completion"] == "Sarcasm"


@pytest.mark.parametrize(("raw", "label"), [(0, "Not Sarcasm"), (1, "Sarcasm")])
def test_sarcasm_labels(raw, label):
    assert apply_label_rule(load_task(TASKS / "sarc.yaml").label, {"label": raw}) == (label, None)


def flags(**true):
    cols = ("label_racial", "label_masculine", "label_feminine", "label_age")
    return {c: c.removeprefix("label_") in true for c in cols}


@pytest.mark.parametrize(("row", "label"), [
    (flags(), "unbiased"), (flags(racial=1), "biased"), (flags(masculine=1), "biased"),
    (flags(feminine=1), "biased"), (flags(age=1), "unbiased"),
])
def test_hr_bias_is_racial_or_gender(row, label):
    assert apply_label_rule(load_task(TASKS / "hr_bias.yaml").label, row) == (label, None)


def test_hr_bias_categories_are_one_override_away():
    task = load_task(TASKS / "hr_bias.yaml",
                     {"label": {"any_of": ["label_racial", "label_masculine", "label_feminine",
                                           "label_age"]}})
    assert apply_label_rule(task.label, flags(age=1)) == ("biased", None)


def test_hr_bias_prompt_is_the_published_instruction():
    task = load_task(TASKS / "hr_bias.yaml")
    assert render_prompt(task, {"text": "We want young rockstars."}) == (
        "Instruction: Is the following job description biased? Please choose an answer from "
        "{biased/unbiased}.\nInput: We want young rockstars.\nAnswer: ")


def test_hr_bias_mirror_counts_match_its_source_notes(mirror_dir):
    """SOURCE.md: racial|masculine|feminine holds for 239/584 test and 1109/2190 train rows."""
    task = load_task(TASKS / "hr_bias.yaml")
    for file, expected in (("test", 239), ("train_unverified_synthetic", 1109)):
        df = pd.read_parquet(mirror_dir / "hr_bias_job_descriptions" / f"{file}.parquet")
        labels = [apply_label_rule(task.label, r)[0] for r in df.to_dict("records")]
        assert labels.count("biased") == expected
