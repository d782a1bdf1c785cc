"""Every question and answer string of OCC-MLLM-CoT, and the parsers that read a model's free-text answer.

This is the one place where these strings live (see ../shared/seed/NOTES.md for where each comes from).
The parsers never guess: an answer they cannot read with confidence is ``UNPARSED``.
"""

from __future__ import annotations

import re

# The eight ObMan classes, in the seed's order of frequency in the training set.
CLASSES: tuple[str, ...] = ("jar", "bottle", "cellphone", "bowl", "knife", "camera", "can", "remote")

IMAGE_TOKEN = "<image>"
UNPARSED = "unparsed"
YES, NO = "Yes", "No"

# --- questions (exact seed strings) ----------------------------------------------------------------
IDENTIFY_TEXT = "What's the object in the hand?"
Q1 = f"{IDENTIFY_TEXT}\n{IMAGE_TOKEN}"
CLARITY_TEXT = "Is it clear to identify the object in the hand?"
Q6 = CLARITY_TEXT  # as the second turn of a Q1+Q6 conversation
Q6_PREFERENCE = CLARITY_TEXT + "\n"  # the `question` field of the seed's preference pairs carries a trailing newline
PLAN_TEXT = "Please analyze this image step by step."
Q0 = f"{PLAN_TEXT}\n{IMAGE_TOKEN}"
# The seed's fixed plan, typo ("orignal") included, as in train_Q1_Q6_Q0_4_balanced_10140.jsonl.
Q0_PLAN = (
    "Step 1: I will analyze this RGB image and identify the object in the hand. "
    "Step 2: I will assess whether the object in the hand can be clearly identified from the original image. "
    "Step 3: Based on the assessment in Step 2, if clear: I will describe the object based on orignal features "
    "present in the image; if unclear: I will apply a 3D reconstruction model to render an enhanced version of the "
    "image, then use this rendered image to identify the object."
)
ATTRIBUTES: tuple[str, ...] = ("round", "thin", "long")
ATTRIBUTE_QUESTIONS: dict[str, str] = {a: f"Is the object in the hand {a}?" for a in ATTRIBUTES}
CHECK_AGAIN_TEXT = "Please check again what's the object in the hand"
SECOND_ATTEMPT = Q1.replace("What's the object in the hand", CHECK_AGAIN_TEXT)

# --- the step headings of the paper's inference figure ---------------------------------------------
STEP_DESCRIBE = "I will describe the object in the hand: is it round, thin, long?"
STEP_IDENTIFY = "I will analyze this RGB image and identify the object in the hand."
STEP_REFLECT = "I will assess whether the object in the hand can be clearly identified from the original image."
STEP_3D = (
    "If clear: describe from the original features; if unclear: apply a 3D reconstruction model to render an "
    "enhanced version of the image, then use this rendered image to identify the object."
)
NO_3D_REQUIRED = "3D not required"
THREE_D_REQUIRED = "3D required"


# --- answer templates ------------------------------------------------------------------------------
def identify_answer(cls: str) -> str:
    """The seed's Q1 target: ``The object is {cls}.``"""
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; expected one of {', '.join(CLASSES)}")
    return f"The object is {cls}."


def clarity_answer(clear: bool) -> str:
    """The seed's Q6 target: ``Yes.`` or ``No.``"""
    return f"{YES}." if clear else f"{NO}."


def attribute_answer(value: bool) -> str:
    """The attribute questions' target: ``Yes`` or ``No`` (no full stop, as in the paper's figure)."""
    return YES if value else NO


def answer_problem(question: str, answer: str, classes=CLASSES) -> str | None:
    """What keeps `answer` from reading as an answer to `question`, or None: "What's the object..." (and its "check
    again" form) wants one of `classes`, the clarity and attribute questions yes or no; other questions take anything."""
    q = strip_image(question)
    if q.startswith(IDENTIFY_TEXT) or q.startswith(CHECK_AGAIN_TEXT):
        named = parse_object(answer)
        if named == UNPARSED or named not in classes:
            shown = answer.strip().removeprefix("The object is ").rstrip(".")
            return f"unknown class {shown!r} in answer {answer!r} (known: {', '.join(sorted(classes))})"
    elif q.startswith(CLARITY_TEXT) or q in ATTRIBUTE_QUESTIONS.values():
        if parse_yes_no(answer) == UNPARSED:
            return f"answer {answer!r} to {q!r} is neither yes nor no"
    return None


def answer_fits(question: str, answer: str | None) -> bool:
    """Does `answer` read as an answer to `question` (see `answer_problem`; an empty answer never does)."""
    return bool(answer and answer.strip()) and answer_problem(question, answer) is None


def readable_answer(question: str, answer: str | None) -> bool:
    """An answer fit to show an annotator: it fits the question (see `answer_fits`), is printable text with no broken
    bytes, and for the class questions is a class sentence ("The object is jar.", "This object is a jar"), not a
    fragment that merely contains a class name."""
    if not answer_fits(question, answer) or not answer.isprintable() or "\ufffd" in answer:
        return False
    q = strip_image(question)
    if q.startswith(IDENTIFY_TEXT) or q.startswith(CHECK_AGAIN_TEXT):
        return _CANONICAL_RE.search(" ".join(answer.lower().split())) is not None
    return len(answer.split()) <= 3  # "Yes.", "No", "Yes, it is."


def with_image(question: str) -> str:
    """A question as the first turn of a conversation: with the ``<image>`` placeholder on its own line."""
    return question if IMAGE_TOKEN in question else f"{question}\n{IMAGE_TOKEN}"


def strip_image(question: str) -> str:
    """A question without its ``<image>`` placeholder (what a chat template that inserts images itself wants)."""
    return question.replace(f"\n{IMAGE_TOKEN}", "").replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "").strip()


# --- parsers ---------------------------------------------------------------------------------------
# Words that name a class. "can" is also a verb, so it only counts when a noun phrase makes it a noun.
_CLASS_WORDS: dict[str, str] = {
    "jar": "jar", "jars": "jar",
    "bottle": "bottle", "bottles": "bottle",
    "cellphone": "cellphone", "cellphones": "cellphone", "cell phone": "cellphone", "cell-phone": "cellphone",
    "mobile phone": "cellphone", "smartphone": "cellphone", "smart phone": "cellphone", "phone": "cellphone",
    "phones": "cellphone", "mobile": "cellphone",
    "bowl": "bowl", "bowls": "bowl",
    "knife": "knife", "knives": "knife",
    "camera": "camera", "cameras": "camera",
    "remote": "remote", "remotes": "remote", "remote control": "remote", "remote controller": "remote",
    "cans": "can", "tin can": "can", "soda can": "can", "beer can": "can", "tin": "can",
}
_CLASS_RE = re.compile(
    r"\b(" + "|".join(sorted((re.escape(w) for w in _CLASS_WORDS), key=len, reverse=True)) + r")\b"
)
# "can" as a noun: after an article/determiner or "is", or as the whole answer.
_CAN_NOUN_RE = re.compile(r"(?:\b(?:a|an|the|this|that|is|it's|its|one)\s+|^\s*)can\b(?!\s+(?:be|see|tell|not|identify))")
_NEGATED_RE = re.compile(r"\b(?:not|isn't|no|neither|nor|rather than|instead of)\s+(?:a\s+|an\s+|the\s+)?$")
_CANONICAL_RE = re.compile(r"\bobject\s+is\s+(?:an?\s+|the\s+)?([a-z][a-z -]*?)\s*[.!]?\s*$")


def _mentions(text: str) -> list[tuple[int, str]]:
    found = [(m.start(), _CLASS_WORDS[m.group(1)]) for m in _CLASS_RE.finditer(text)]
    found += [(m.end() - 3, "can") for m in _CAN_NOUN_RE.finditer(text)]
    return [(pos, cls) for pos, cls in found if not _NEGATED_RE.search(text[max(0, pos - 24):pos])]


def parse_object(text: str | None) -> str:
    """The class a free-text answer names, or ``UNPARSED``.

    Reads "The object is jar.", "This object is a jar", "jar", "It's a Jar!", "a cell phone", "It is not a jar,
    it is a bottle". Returns ``UNPARSED`` for an empty answer, an answer naming no class, or one naming two
    different classes without negating one of them.
    """
    if not text:
        return UNPARSED
    low = " ".join(text.lower().replace("’", "'").split())
    canonical = _CANONICAL_RE.search(low)
    if canonical:
        word = canonical.group(1).strip()
        if word in _CLASS_WORDS:
            return _CLASS_WORDS[word]
        if word == "can":
            return "can"
    classes = {cls for _, cls in _mentions(low)}
    return classes.pop() if len(classes) == 1 else UNPARSED


_YES_WORDS = {"yes", "yeah", "yep", "yup", "sure", "certainly", "definitely", "correct", "true", "clear"}
_NO_WORDS = {"no", "nope", "not", "unclear", "false", "uncertain"}
_NO_PHRASES = re.compile(
    r"\b(?:not\s+(?:\w+\s+)?clear|unclear|cannot|can't|can\s+not|hard\s+to|difficult\s+to|impossible|"
    r"not\s+(?:able|possible|sure|certain|visible))\b"
)
_YES_PHRASES = re.compile(r"\b(?:is\s+clear|clearly|it's\s+clear|can\s+(?:be\s+)?(?:clearly\s+)?identif)")


def parse_yes_no(text: str | None) -> str:
    """``YES``, ``NO`` or ``UNPARSED`` for a free-text answer to a yes/no question.

    The first word decides when it is a yes or no word ("Yes", "yes.", "No, it is not clear"); otherwise a phrase
    such as "it is not clear" or "it is clear" does, and an answer with signals both ways is ``UNPARSED``.
    """
    if not text:
        return UNPARSED
    low = " ".join(text.lower().replace("’", "'").split())
    words = re.findall(r"[a-z']+", low)
    if not words:
        return UNPARSED
    if words[0] in _YES_WORDS and words[0] != "clear":
        return YES
    if words[0] in _NO_WORDS and words[0] != "not":
        return NO
    no, yes = bool(_NO_PHRASES.search(low)), bool(_YES_PHRASES.search(low)) or words[0] == "clear"
    if no and not yes:
        return NO
    if yes and not no:
        return YES
    return UNPARSED
