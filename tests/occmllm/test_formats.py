import json

import pytest

from occmllm import formats, prompts


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["train_Q1_10140", "train_Q1_Q6_10140", "train_Q1_Q6_Q0_4_balanced_10140"])
def test_seed_conversations_round_trip_byte_for_byte(seed_dir, tmp_path, name):
    src = seed_dir / f"{name}.sample.jsonl"
    records = formats.read_conversations(src)
    assert len(records) == 60 and all(isinstance(r, formats.Conversation) for r in records)
    out = tmp_path / "out.jsonl"
    formats.write_jsonl(out, records)
    assert out.read_bytes() == src.read_bytes()


def test_seed_preferences_round_trip_byte_for_byte(seed_dir, tmp_path):
    src = seed_dir / "train_Q1_Q6_balanced_dpo_10140.sample.jsonl"
    pairs = formats.read_preferences(src)
    assert pairs[0].question == prompts.Q6_PREFERENCE and {p.chosen for p in pairs} == {"Yes.", "No."}
    formats.write_jsonl(tmp_path / "p.jsonl", pairs)
    assert (tmp_path / "p.jsonl").read_bytes() == src.read_bytes()


def test_seed_predictions_round_trip_byte_for_byte(seed_dir, tmp_path):
    src = seed_dir / "predictions.sample.json"
    preds = formats.read_predictions(src)
    assert preds["00000003"] == "The object is cellphone."
    formats.write_predictions(tmp_path / "p.json", preds)
    assert (tmp_path / "p.json").read_bytes() == src.read_bytes()


def test_unknown_keys_and_key_order_survive(tmp_path):
    line = {"image": "a.jpg", "extra_score": 0.5, "id": "7",
            "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "yo"}], "z": [1]}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(line) + "\n")
    (record,) = formats.read_conversations(src)
    assert record.extra == {"extra_score": 0.5, "z": [1]}
    formats.write_jsonl(tmp_path / "out.jsonl", [record])
    assert list(_lines(tmp_path / "out.jsonl")[0]) == list(line)


def test_meta_round_trip(tmp_path):
    meta = {"obman_q1": formats.MetaEntry(root="data/train/images", annotation="data/train_Q1.jsonl", length=3)}
    formats.write_meta(tmp_path / "meta.json", meta)
    back = formats.read_meta(tmp_path / "meta.json")
    assert back["obman_q1"].to_dict() == {"root": "data/train/images", "annotation": "data/train_Q1.jsonl",
                                          "data_augment": False, "repeat_time": 1, "length": 3}
    formats.write_meta(tmp_path / "again.json", back)
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "meta.json").read_bytes()


def test_builders_match_the_seed_records(seed_dir):
    q1 = formats.read_conversations(seed_dir / "train_Q1_10140.sample.jsonl")[0]
    assert formats.q1_conversation(q1.id, q1.image, prompts.parse_object(q1.conversations[1]["value"])) == \
        formats.Conversation(q1.id, q1.image, q1.conversations)
    q16 = formats.read_conversations(seed_dir / "train_Q1_Q6_10140.sample.jsonl")[1]
    built = formats.q1_q6_conversation(q16.id, q16.image, "bowl", clear=False)
    assert built.to_dict() == q16.to_dict()
    plan = next(r for r in formats.read_conversations(seed_dir / "train_Q1_Q6_Q0_4_balanced_10140.sample.jsonl")
                if r.conversations[0]["value"] == prompts.Q0)
    assert formats.plan_conversation(plan.id, plan.image).to_dict() == plan.to_dict()
    pair = formats.read_preferences(seed_dir / "train_Q1_Q6_balanced_dpo_10140.sample.jsonl")[1]
    assert formats.clarity_pair(pair.image, clear=False).to_dict() == pair.to_dict()
    attrs = formats.attribute_conversation("1", "1.jpg", {"round": True, "thin": False, "long": True})
    assert [t["value"] for t in attrs.conversations[1::2]] == ["Yes", "No", "Yes"]
    assert sum(t["value"].count("<image>") for t in attrs.conversations) == 1


def test_trl_conversation_round_trip(seed_dir):
    for path in seed_dir.glob("train_Q1*.jsonl"):
        if "dpo" in path.name:
            continue
        for record in formats.read_conversations(path):
            trl = formats.to_trl_conversation(record, "/data/images")
            assert trl["images"] == [f"/data/images/{record.image}"]
            assert [m["role"] for m in trl["messages"]][:2] == ["user", "assistant"]
            n_blocks = sum(b["type"] == "image" for m in trl["messages"] for b in m["content"])
            assert n_blocks == 1
            assert formats.from_trl_conversation(trl, "/data/images").to_dict() == record.to_dict()


def test_trl_preference_round_trip(seed_dir):
    for pair in formats.read_preferences(seed_dir / "train_Q1_Q6_balanced_dpo_10140.sample.jsonl"):
        trl = formats.to_trl_preference(pair, "/imgs")
        assert trl["prompt"][0]["content"][0] == {"type": "image"}
        assert trl["chosen"][0]["content"][0]["text"] == pair.chosen
        assert formats.from_trl_preference(trl, "/imgs").to_dict() == pair.to_dict()


def test_write_is_atomic_on_failure(tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("old\n")

    def records():
        yield formats.clarity_pair("a.jpg", True)
        raise RuntimeError("crash while producing records")

    with pytest.raises(RuntimeError):
        formats.write_jsonl(out, records())
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["keep.jsonl"]


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"\n\n", "no records"),
    (b'{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "va', "truncated JSON"),
    (b'{"conversations": \xff}\n', "not valid UTF-8"),
    (b'{"conversations": []}\n', "non-empty list"),
    (b'{"image": "a.jpg"}\n', "missing key 'conversations'"),
])
def test_readers_raise_format_error_with_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(formats.FormatError, match=message) as info:
        formats.read_conversations(path)
    assert str(info.value).startswith(str(path))


def test_reader_tolerates_bom_crlf_and_blank_lines(tmp_path, seed_dir):
    src = (seed_dir / "train_Q1_10140.sample.jsonl").read_bytes()
    path = tmp_path / "dos.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + src.replace(b"\n", b"\r\n\r\n"))
    assert [r.to_dict() for r in formats.read_conversations(path)] == \
        [r.to_dict() for r in formats.read_conversations(seed_dir / "train_Q1_10140.sample.jsonl")]
