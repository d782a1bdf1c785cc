import pytest

from occmllm import prompts
from occmllm.prompts import NO, UNPARSED, YES, parse_object, parse_yes_no


@pytest.mark.parametrize("text, expected", [
    ("The object is jar.", "jar"),
    ("This object is a jar", "jar"),
    ("jar", "jar"),
    ("It's a Jar!", "jar"),
    ("  the object is CELLPHONE.  ", "cellphone"),
    ("a cell phone", "cellphone"),
    ("It looks like a mobile phone.", "cellphone"),
    ("The object is can.", "can"),
    ("a can", "can"),
    ("I can see a bottle in the hand", "bottle"),
    ("It is not a jar, it is a bottle.", "bottle"),
    ("knives", "knife"),
    ("remote control", "remote"),
    ("The object is camera", "camera"),
])
def test_parse_object_reads_free_text(text, expected):
    assert parse_object(text) == expected


@pytest.mark.parametrize("text", ["", None, "I can not tell", "jar or bottle", "The object is spoon.", "something round",
                                  "I can see it"])
def test_parse_object_returns_unparsed_instead_of_guessing(text):
    assert parse_object(text) == UNPARSED


@pytest.mark.parametrize("text, expected", [
    ("Yes", YES), ("yes.", YES), ("Yes.", YES), ("YES, it is clear", YES), ("It is clear.", YES), ("Clear", YES),
    ("No.", NO), ("no", NO), ("No, it is not clear", NO), ("It is not clear", NO), ("Unclear.", NO),
    ("I cannot identify it", NO), ("Not clear", NO),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize("text", ["", None, "maybe", "It is clear that it is not clear", "The object is jar."])
def test_parse_yes_no_unparsed(text):
    assert parse_yes_no(text) == UNPARSED


def test_seed_strings_are_exact():
    assert prompts.Q1 == "What's the object in the hand?\n<image>"
    assert prompts.Q6_PREFERENCE == "Is it clear to identify the object in the hand?\n"
    assert prompts.SECOND_ATTEMPT == "Please check again what's the object in the hand?\n<image>"
    assert prompts.identify_answer("jar") == "The object is jar."
    assert prompts.clarity_answer(False) == "No."
    assert len(prompts.CLASSES) == 8
    with pytest.raises(ValueError, match="unknown class"):
        prompts.identify_answer("spoon")


def test_every_class_answer_parses_back():
    for cls in prompts.CLASSES:
        assert parse_object(prompts.identify_answer(cls)) == cls
