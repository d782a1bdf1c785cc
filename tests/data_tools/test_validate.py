import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools import validate
from occmllm import formats

Q1 = "What's the object in the hand?\\n<image>"


def run(capsys, *args):
    code = validate.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_seed_sample_validates(seed_dir, capsys):
    code, out, err = run(capsys, *sorted(seed_dir.iterdir()))
    assert code == 0, out
    assert "ok: 280 records in 5 file(s)" in err


def test_each_problem_is_reported_as_file_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.jpg").write_bytes(b"")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        '{"id": "1", "image": "ok.jpg", "conversations": [{"from": "human", "value": "' + Q1 + '"}, {"from": "gpt", "value": "The object is jar."}]}',
        '{"id": "2", "image": "ok.jpg", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "' + Q1 + '"}]}',
        '{"id": "3", "image": "missing.jpg", "conversations": [{"from": "human", "value": "' + Q1 + '"}, {"from": "gpt", "value": "The object is jar."}]}',
        '{"id": "4", "image": "ok.jpg", "conversations": [{"from": "human", "value": "What\'s the object in the hand?"}, {"from": "gpt", "value": "The object is jar."}]}',
        '{"id": "5", "image": "ok.jpg", "conversations": [{"from": "human", "value": "' + Q1 + '"}, {"from": "gpt", "value": "The object is spoon."}]}',
        '{"id": "6", "image": "ok.jpg"}',
        '{"id": 7, oops}',
    ]) + "\n")
    code, out, _ = run(capsys, bad, "--images-root", tmp_path / "images")
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith(f"{bad}:2: wrong role order") for line in lines)
    assert any(line.startswith(f"{bad}:3: image 'missing.jpg' not found") for line in lines)
    assert any(line.startswith(f"{bad}:4: 0 <image> placeholder(s) for 1 image(s)") for line in lines)
    assert any(line.startswith(f"{bad}:5: unknown class 'spoon'") for line in lines)
    assert any(line.startswith(f"{bad}:6: missing key 'conversations'") for line in lines)
    assert any(line.startswith(f"{bad}:7: bad JSON") for line in lines)
    assert not any(f"{bad}:1:" in line for line in lines)


@pytest.mark.parametrize("content, expected, code", [
    (b"", ":  file is empty", 1),
    (b'{"image": "a.jpg", "question": "q", "chosen": "Yes.", "rejected": "No."}\n{"image": "a.jpg", "quest',
     ":2: truncated JSON", 1),
    (b'{"image": "a.jpg", "question": "q", "chosen": "Yes.", "rejected": "No."}\n{"image": "\xe9.jpg", "question": "q", "chosen": "a", "rejected": "b"}\n',
     ":2: not valid UTF-8", 1),
    (b'\xef\xbb\xbf{"image": "a.jpg", "question": "q", "chosen": "Yes.", "rejected": "No."}\n', ":1: warning: UTF-8 byte-order mark", 0),
    (b'{"image": "a.jpg", "question": "q", "chosen": "Yes.", "rejected": "No."}\r\n', ":1: warning: CRLF line end", 0),
    (b'{"image": "a.jpg", "question": "q", "chosen": "Yes.", "rejected": "No."}\n\n{"image": "b.jpg", "question": "q", "chosen": "No.", "rejected": "Yes."}\n',
     ":2: warning: blank line skipped", 0),
])
def test_bad_input_gets_a_message_with_the_line(tmp_path, capsys, content, expected, code):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    got, out, err = run(capsys, path)
    assert got == code
    assert f"{path}{expected}".replace(":  ", ": ") in out + err


def test_overlong_line_is_skipped_not_loaded(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 1024)
    path = tmp_path / "huge.jsonl"
    good = b'{"image": "a.jpg", "question": "q", "chosen": "Yes.", "rejected": "No."}\n'
    path.write_bytes(good + b'{"question": "' + b"x" * 50_000 + b'"}\n' + good)
    code, out, err = run(capsys, path)
    assert code == 1 and f"{path}:2: line longer than" in out
    assert "2 records" in err  # lines 1 and 3 were still read


def test_predictions_and_meta(tmp_path, capsys, seed_dir):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"00000001": "The object is jar.", "00000002": "The object is spoon."}, indent=2))
    code, out, _ = run(capsys, preds)
    assert code == 1 and f"{preds}:3: 00000002: unknown class" in out

    images = tmp_path / "images"
    images.mkdir()
    records = formats.read_conversations(seed_dir / "train_Q1_10140.sample.jsonl")
    for r in records:
        (images / r.image).write_bytes(b"")
    formats.write_jsonl(tmp_path / "train_Q1.jsonl", records)
    formats.write_meta(tmp_path / "meta.json", {"q1": formats.MetaEntry("images", "train_Q1.jsonl", length=60)})
    code, out, _ = run(capsys, tmp_path / "meta.json")
    assert code == 0, out
    formats.write_meta(tmp_path / "meta.json", {"q1": formats.MetaEntry("images", "train_Q1.jsonl", length=61)})
    code, out, _ = run(capsys, tmp_path / "meta.json")
    assert code == 1 and "length is 61 but" in out
    (images / records[5].image).unlink()
    code, out, _ = run(capsys, tmp_path / "train_Q1.jsonl")  # the root comes from meta.json beside the file
    assert code == 1 and f"train_Q1.jsonl:6: image '{records[5].image}' not found" in out


def test_trl_files_validate(tmp_path, capsys, seed_dir):
    pairs = formats.read_preferences(seed_dir / "train_Q1_Q6_balanced_dpo_10140.sample.jsonl")
    formats.write_jsonl(tmp_path / "trl.jsonl", [formats.to_trl_preference(p) for p in pairs])
    code, out, _ = run(capsys, tmp_path / "trl.jsonl")
    assert code == 0, out


def test_cli_exit_codes_and_no_traceback(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\x00\xff garbage")
    proc = subprocess.run([sys.executable, "-m", "data_tools.validate", str(path), str(tmp_path / "nope.jsonl")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{tmp_path / 'nope.jsonl'}: no such file" in proc.stdout
