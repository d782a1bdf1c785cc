"""The seed's metrics and the paper's three scores, as pure functions of per-image records.

Definitions (seed code, ../shared/seed/NOTES.md "Inference as the original code runs it"):
- ACC1: share of images whose Q1 answer names the right class (parsed with `prompts.parse_object`).
- ACC6: share of images whose clarity answer agrees with the model's own Q1 correctness: "Yes" when Q1 was right,
  "No" when it was wrong. An unparsed clarity answer agrees with nothing.
- 3D plus: over the images whose Q1 answer is wrong, the share answered right on the 3D render; an image without a
  render (missing file, failed reconstruction) counts as wrong.
- Decision (final accuracy): over all images, the share whose final answer is right. The final answer is the
  render's answer when the clarity answer is "No" (a missing render makes it wrong), the Q1 answer when it is "Yes",
  and nothing when it is neither: the seed's `process_unclear_images` keeps only images whose clarity answer is yes or
  no, so an unreadable clarity answer makes the image wrong (a model that does not answer the clarity question cannot
  reach its Description as Decision).
These use the parsed answers (`prompts.parse_object`, `prompts.parse_yes_no`: "It is a jar" counts as jar). Beside
them, `strict` gives the same four scores the way the seed's code compares strings: a class answer is right only
when it equals "The object is {class}." exactly, and a clarity answer counts only when, lower-cased, stripped and
without dots, it is "yes" or "no" (`seed_clarity`).
The paper's scores, with the closest reading of the code written down:
- Description = ACC1 (the first step's answer accuracy). When the attribute questions were asked, `attributes`
  reports their accuracy separately.
- Reflection = ACC6.
- Decision = final accuracy as above.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from occmllm import prompts

HIDDEN_BELOW = 0.4  # "visible < 40%": the photos the 3D route is for; the results tables' Decision (visible < 40%)
BUCKETS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0001))  # visible fraction of the object


@dataclass
class ImageResult:
    """What the model said about one test image. `render_answer` is None when no render was looked at."""

    id: str
    label: str
    q1: str  # parsed class or UNPARSED
    clarity: str  # YES / NO / UNPARSED
    render_answer: str | None = None  # parsed class on the render, UNPARSED, or None (not asked / no render)
    render_missing: bool = False  # a render was needed (or asked for) but none exists
    attributes: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (parsed YES/NO, truth)
    visible_fraction: float | None = None
    q1_text: str | None = None  # the raw answers, for the strict (exact-string) scores; None when not recorded
    clarity_text: str | None = None
    render_text: str | None = None

    @property
    def q1_correct(self) -> bool:
        return self.q1 == self.label

    @property
    def final(self) -> str:
        return decide(self.q1, self.clarity, self.render_answer, self.render_missing)

    @property
    def final_correct(self) -> bool:
        return self.final == self.label


def decide(q1: str, clarity: str, render_answer: str | None, render_missing: bool = False) -> str:
    """The final answer as it is scored (the seed's rule): the render's answer when the clarity answer is "No"
    (UNPARSED when the render is missing), the Q1 answer when it is "Yes", UNPARSED when it is neither."""
    if clarity == prompts.NO:
        return prompts.UNPARSED if render_missing or render_answer is None else render_answer
    return q1 if clarity == prompts.YES else prompts.UNPARSED


def seed_clarity(text: str | None) -> str:
    """The seed's reading of a clarity answer: lower-cased, stripped, dots removed; "yes" / "no", else "" (neither)."""
    word = (text or "").lower().strip().replace(".", "")
    return word if word in ("yes", "no") else ""


def strict(results: list[ImageResult]) -> dict | None:
    """ACC1, ACC6, 3D plus and Decision by exact strings, as the seed's code computes them (see the module's
    docstring); None when the raw answers were not recorded."""
    if not results or any(r.q1_text is None or r.clarity_text is None for r in results):
        return None
    right_q1, agrees, plus, final = [], [], [], []
    for r in results:
        truth = prompts.identify_answer(r.label)
        q1_right, clarity = r.q1_text == truth, seed_clarity(r.clarity_text)
        render_right = not r.render_missing and r.render_text is not None and r.render_text == truth
        right_q1.append(q1_right)
        agrees.append((clarity == "yes" and q1_right) or (clarity == "no" and not q1_right))
        if not q1_right:
            plus.append(render_right)
        final.append(q1_right if clarity == "yes" else render_right if clarity == "no" else False)
    return {"acc1": _share(right_q1), "acc6": _share(agrees), "3d_plus": _share(plus), "decision": _share(final),
            "clarity_neither_yes_nor_no": sum(seed_clarity(r.clarity_text) == "" for r in results)}


def clarity_agrees(result: ImageResult) -> bool:
    """The seed's ACC6 rule for one image."""
    return (result.clarity == prompts.YES and result.q1_correct) or (result.clarity == prompts.NO and not result.q1_correct)


def _share(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def acc1(results: list[ImageResult]) -> float | None:
    return _share([r.q1_correct for r in results])


def acc6(results: list[ImageResult]) -> float | None:
    return _share([clarity_agrees(r) for r in results])


def three_d_plus(results: list[ImageResult]) -> float | None:
    """Share of Q1-wrong images answered right on the render (a missing render is wrong); None without Q1-wrong images."""
    wrong = [r for r in results if not r.q1_correct]
    return _share([not r.render_missing and r.render_answer == r.label for r in wrong])


def decision(results: list[ImageResult]) -> float | None:
    return _share([r.final_correct for r in results])


def attribute_accuracy(results: list[ImageResult]) -> dict[str, float | None]:
    names = sorted({name for r in results for name in r.attributes})
    return {name: _share([r.attributes[name][0] == prompts.attribute_answer(r.attributes[name][1])
                          for r in results if name in r.attributes]) for name in names}


def confusion_matrix(results: list[ImageResult], final: bool = True) -> dict[str, dict[str, int]]:
    """{true class: {predicted class or "unparsed": count}} over the classes present."""
    matrix: dict[str, Counter] = {}
    for r in results:
        matrix.setdefault(r.label, Counter())[r.final if final else r.q1] += 1
    return {label: dict(sorted(counts.items())) for label, counts in sorted(matrix.items())}


def mostly_hidden(results: list) -> list:
    """The results whose object is less than HIDDEN_BELOW visible (those without a visible fraction are left out)."""
    return [r for r in results if r.visible_fraction is not None and r.visible_fraction < HIDDEN_BELOW]


def bucket_name(low: float, high: float) -> str:
    return f"{low:.2f}-{min(high, 1.0):.2f}"


def summary(results: list[ImageResult]) -> dict:
    """Every metric of the report: overall, per class, per visible-fraction bucket, confusion matrices."""

    def scores(rs: list[ImageResult]) -> dict:
        return {"n": len(rs), "acc1": acc1(rs), "acc6": acc6(rs), "3d_plus": three_d_plus(rs),
                "decision": decision(rs), "routed_to_3d": _share([r.clarity == prompts.NO for r in rs]),
                "render_missing": sum(r.render_missing for r in rs if r.clarity == prompts.NO)}

    overall = scores(results)
    report = {
        **overall,
        "description": overall["acc1"], "reflection": overall["acc6"],
        "clarity_unparsed": sum(r.clarity == prompts.UNPARSED for r in results),
        "q1_unparsed": sum(r.q1 == prompts.UNPARSED for r in results),
        "attributes": attribute_accuracy(results),
        "per_class": {label: scores([r for r in results if r.label == label])
                      for label in sorted({r.label for r in results})},
        "per_visible_fraction": {},
        "confusion_q1": confusion_matrix(results, final=False),
        "confusion_final": confusion_matrix(results, final=True),
        "strict": strict(results),
    }
    with_fraction = [r for r in results if r.visible_fraction is not None]
    for low, high in BUCKETS if with_fraction else ():
        report["per_visible_fraction"][bucket_name(low, high)] = scores(
            [r for r in with_fraction if low <= r.visible_fraction < high])
    return report


def to_dict(result: ImageResult) -> dict:
    return {**asdict(result), "final": result.final, "q1_correct": result.q1_correct,
            "final_correct": result.final_correct}
