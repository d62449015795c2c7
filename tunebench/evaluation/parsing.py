"""Turn a model's raw text answer into one canonical label, or the explicit INVALID.

A parser is a function ``(raw, labels) -> str`` registered under a short name so that a
task file can name it (``parser: strict``). It returns a label spelled exactly as in
``labels`` or :data:`INVALID`; it never guesses a label for an answer it cannot read,
because a silent default (FinGPT's "anything else is neutral") inflates the score of
whichever class is the default.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

INVALID = "INVALID"

Parser = Callable[[str, Sequence[str]], str]
PARSERS: dict[str, Parser] = {}

# Characters a model wraps a bare answer in: punctuation, markdown emphasis, curly quotes.
_WRAPPERS = string.whitespace + string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb"
# Lead-ins models put before the answer ("Answer: positive", "**Category:** Not Sarcasm").
_LEAD_IN = re.compile(r"^(?:answer|category|sentiment|label)[\s*_]*:[\s*_]*")
# Words that flip the meaning of a label that follows them within a few words.
_NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "non"})
_NEGATION_WINDOW = 3
_WORD = re.compile(r"[\w']+")


def register_parser(name: str) -> Callable[[Parser], Parser]:
    """Decorator that adds a parser to :data:`PARSERS` under ``name``."""

    def decorate(fn: Parser) -> Parser:
        if name in PARSERS:
            raise ValueError(f"parser {name!r} is already registered")
        PARSERS[name] = fn
        return fn

    return decorate


def get_parser(name: str) -> Parser:
    """Return the parser registered as ``name``; unknown names list the known ones."""
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown parser {name!r}; known parsers: {sorted(PARSERS)}") from None


def parse(name: str, raw: str, labels: Sequence[str]) -> str:
    """Parse ``raw`` with the parser called ``name``."""
    return get_parser(name)(raw, labels)


def _label_lookup(labels: Sequence[str]) -> dict[str, str]:
    """Map lowercased label -> label as spelled; reject lists a parser cannot answer from."""
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    lookup: dict[str, str] = {}
    for label in labels:
        key = " ".join(label.lower().split())
        if not key or key in lookup or label == INVALID:
            raise ValueError(f"labels must be distinct non-empty names (not {INVALID!r}): {labels}")
        lookup[key] = label
    return lookup


def _bare_answer(line: str) -> str:
    """Lowercase a line and peel off wrappers and an 'answer:'-style lead-in."""
    text = line.lower().strip(_WRAPPERS)
    text = _LEAD_IN.sub("", text).strip(_WRAPPERS)
    return " ".join(text.split())


def _is_negated(text: str, start: int) -> bool:
    """True when one of the few words before ``start`` negates what follows."""
    before = _WORD.findall(text[:start])[-_NEGATION_WINDOW:]
    return any(word in _NEGATIONS or word.endswith("n't") for word in before)


def _label_pattern(key: str) -> re.Pattern[str]:
    # Whole words only, so "biased" is not found inside "unbiased". A hyphen just before
    # also blocks the match: "non-positive" and "un-biased" must not read as the label.
    words = r"\s+".join(re.escape(word) for word in key.split())
    return re.compile(rf"(?<![\w-]){words}(?!\w)")


def _labels_in_text(text: str, lookup: dict[str, str]) -> list[tuple[str, bool]]:
    """Every label occurrence as (key, negated), longest labels first with spans masked."""
    masked = text
    found: list[tuple[str, bool]] = []
    # Longer labels first so "not sarcasm" claims its words before "sarcasm" is searched.
    for key in sorted(lookup, key=len, reverse=True):
        for match in _label_pattern(key).finditer(masked):
            found.append((key, _is_negated(text, match.start())))
        masked = _label_pattern(key).sub(lambda m: " " * len(m.group()), masked)
    return found


@register_parser("strict")
def strict(raw: str, labels: Sequence[str]) -> str:
    """The default parser: exactly one unnegated label in the answer, else INVALID.

    1. If the first non-empty line, stripped of punctuation, quotes, markdown and a
       leading "answer:"/"category:"/"sentiment:"/"label:", is a label -> that label.
    2. Otherwise search the whole answer for labels as whole words/phrases (case-
       insensitive, longest first, each match masking its span so "Not Sarcasm" is not
       also "Sarcasm"). Exactly one distinct label, with no occurrence preceded within
       three words by not/no/never/neither/nor/non or an "n't" word -> that label.
    3. Anything else (nothing found, two different labels, a negated label) -> INVALID.
    """
    lookup = _label_lookup(labels)
    text = raw.strip()
    if not text:
        return INVALID
    first_line = next(line for line in text.splitlines() if line.strip())
    bare = _bare_answer(first_line)
    if bare in lookup:
        return lookup[bare]
    found = _labels_in_text(" ".join(text.lower().split()), lookup)
    keys = {key for key, _ in found}
    if len(keys) != 1 or any(negated for _, negated in found):
        return INVALID
    return lookup[keys.pop()]


_FINGPT_LABELS = frozenset({"negative", "neutral", "positive"})


@register_parser("fingpt")
def fingpt(raw: str, labels: Sequence[str]) -> str:
    """FinGPT's published sentiment rule, kept ONLY to reproduce their reported numbers.

    Lenient by design and not to be used for new results: "positive" anywhere wins, then
    "negative", and every other answer -- empty, off-topic, "not positive" read as
    positive -- becomes "neutral". It never returns INVALID. As in their benchmark code,
    only the spellings "positive"/"Positive" and "negative"/"Negative" are looked for,
    so "POSITIVE" falls through to neutral; that quirk is kept so their numbers reproduce.
    """
    lookup = _label_lookup(labels)
    if set(lookup) != _FINGPT_LABELS:
        raise ValueError(
            f"the fingpt parser only applies to {sorted(_FINGPT_LABELS)}; got {labels}"
        )
    if "positive" in raw or "Positive" in raw:
        return lookup["positive"]
    if "negative" in raw or "Negative" in raw:
        return lookup["negative"]
    return lookup["neutral"]
