"""The seed's metrics on hand-made predictions whose scores are known."""

import pytest

from occmllm import metrics, prompts
from occmllm.metrics import ImageResult
from occmllm.prompts import NO, UNPARSED, YES


def cases():
    return [
        # right, says clear: ACC6 agrees; final = Q1 (right)
        ImageResult("a", "jar", "jar", YES, visible_fraction=0.9),
        # wrong, says unclear: ACC6 agrees; render fixes it
        ImageResult("b", "bottle", "jar", NO, render_answer="bottle", visible_fraction=0.1),
        # wrong, says clear: ACC6 disagrees; render asked for 3D plus is right but final stays Q1 (wrong)
        ImageResult("c", "knife", "remote", YES, render_answer="knife", visible_fraction=0.3),
        # right, says unclear: ACC6 disagrees; render missing -> final wrong
        ImageResult("d", "can", "can", NO, render_missing=True, visible_fraction=0.6),
        # wrong, unparsed clarity: ACC6 disagrees; final = Q1 (wrong); render wrong
        ImageResult("e", "bowl", UNPARSED, UNPARSED, render_answer="jar", visible_fraction=0.2),
    ]


def test_acc1_acc6_seed_rule():
    results = cases()
    assert metrics.acc1(results) == pytest.approx(2 / 5)
    assert metrics.acc6(results) == pytest.approx(2 / 5)  # a (yes+right) and b (no+wrong) only


def test_an_unreadable_clarity_answer_makes_the_image_wrong_as_in_the_seed():
    """The seed keeps only images whose clarity answer is yes or no: a right Q1 with no clarity answer is wrong."""
    silent = [ImageResult(str(i), "jar", "jar", UNPARSED) for i in range(3)] + [ImageResult("y", "jar", "jar", YES)]
    assert metrics.acc1(silent) == 1.0 and metrics.decision(silent) == pytest.approx(1 / 4)


def test_strict_scores_compare_exact_strings_like_the_seed():
    def r(label, q1, q6, render=None, missing=False):
        return ImageResult("x", label, prompts.parse_object(q1), prompts.parse_yes_no(q6),
                           prompts.parse_object(render) if render else None, missing,
                           q1_text=q1, clarity_text=q6, render_text=render)

    results = [
        r("jar", "The object is jar.", "Yes."),  # exact: right, clear -> right
        r("jar", "It is a jar", "yes"),  # parsed right; exact Q1 wrong; "yes" + wrong -> ACC6 disagrees, final wrong
        r("can", "The object is bowl.", " No. ", "The object is can."),  # wrong, " No. " counts as no, render right
        r("can", "The object is can.", "No, it is not clear"),  # parsed no; exact: neither yes nor no -> wrong
        r("bowl", "The object is jar.", "No.", None, True),  # no render: wrong, 3D plus wrong
    ]
    exact = metrics.strict(results)
    assert exact["acc1"] == pytest.approx(2 / 5)  # rows 1 and 4
    assert exact["acc6"] == pytest.approx(3 / 5)  # row 1 (yes, right), rows 3 and 5 (no, wrong)
    assert exact["3d_plus"] == pytest.approx(1 / 3)  # Q1-wrong rows 2, 3, 5: only row 3's render is right
    assert exact["decision"] == pytest.approx(2 / 5)  # rows 1 and 3
    assert exact["clarity_neither_yes_nor_no"] == 1
    parsed = metrics.summary(results)
    assert parsed["acc1"] == pytest.approx(3 / 5) and parsed["strict"] == exact
    assert metrics.strict(cases()) is None  # no raw answers recorded


def test_three_d_plus_counts_only_q1_wrong_and_missing_is_wrong():
    results = cases()
    assert metrics.three_d_plus(results) == pytest.approx(2 / 3)  # b right, c right, e wrong
    missing = [ImageResult("x", "jar", "bowl", NO, render_missing=True)]
    assert metrics.three_d_plus(missing) == 0.0
    assert metrics.three_d_plus([ImageResult("y", "jar", "jar", YES)]) is None


def test_decision_routes_no_to_render_and_missing_render_is_wrong():
    results = cases()
    assert [r.final for r in results] == ["jar", "bottle", "remote", UNPARSED, UNPARSED]
    assert metrics.decision(results) == pytest.approx(2 / 5)


def test_summary_per_class_buckets_confusion():
    report = metrics.summary(cases())
    assert report["n"] == 5 and report["description"] == report["acc1"] and report["reflection"] == report["acc6"]
    assert report["per_class"]["jar"]["acc1"] == 1.0 and report["per_class"]["knife"]["acc1"] == 0.0
    buckets = report["per_visible_fraction"]
    assert buckets["0.00-0.25"]["n"] == 2 and buckets["0.75-1.00"]["n"] == 1
    assert report["confusion_q1"]["bowl"] == {UNPARSED: 1}
    assert report["confusion_final"]["bottle"] == {"bottle": 1}
    assert report["routed_to_3d"] == pytest.approx(2 / 5) and report["render_missing"] == 1


def test_attribute_accuracy():
    r = ImageResult("a", "jar", "jar", YES, attributes={"round": (YES, True), "thin": (YES, False)})
    assert metrics.attribute_accuracy([r]) == {"round": 1.0, "thin": 0.0}
