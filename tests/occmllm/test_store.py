"""The annotation store: durability, the queue's overlap rules, undo, progress and agreement."""

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occmllm import formats, prompts
from occmllm.store import (Item, StaleJudgment, Store, StoreError, agreement, cohen_kappa, fleiss_kappa,
                           items_from_dataset)

REPO = Path(__file__).resolve().parents[2]


def make_items(folder: Path, n: int) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        path = folder / f"{i:08d}.jpg"
        Image.fromarray(np.full((16, 16, 3), i * 7 % 255, np.uint8)).save(path)
        items.append(Item(f"item{i}", str(path), prompts.Q1, prompts.identify_answer("jar"),
                          prompts.identify_answer("bottle"), "sample:0", "sample:1", "tiny"))
    return items


def test_acknowledged_judgment_survives_kill(tmp_path):
    """A judgment acknowledged (row id printed) and then the process SIGKILLed is still in the database."""
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 3))
    store.close()
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from occmllm.store import Store
        s = Store({str(tmp_path / 'data')!r})
        item = s.next_item("alice")
        print(s.add_judgment("alice", item, "A"), flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    ack = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = Store(tmp_path / "data")
    assert ack in again.judgment_ids()
    assert again.judgments()[0]["choice"] == "A"


def test_wal_and_full_sync(tmp_path):
    store = Store(tmp_path)
    db = store._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_overlap_queue_rules(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 4))
    seen = {}
    for name in ["ann", "bob", "cat"]:
        seen[name] = []
        while (item := store.next_item(name, overlap=2)) is not None:
            assert item.id not in seen[name], "nobody sees an item twice"
            seen[name].append(item.id)
            store.add_judgment(name, item, "A")
    per_item = {}
    for j in store.judgments():
        per_item.setdefault(j["item_id"], set()).add(j["annotator"])
    assert len(per_item) == 4 and all(len(v) == 2 for v in per_item.values()), "every item exactly k=2 annotators"
    assert store.progress("cat", overlap=2).done_items == 4


def test_claims_give_concurrent_annotators_different_items(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 3))
    a, b = store.next_item("a", overlap=1), store.next_item("b", overlap=1)
    assert a.id != b.id
    assert store.next_item("a", overlap=1).id == a.id  # asking again gives back the same held item


def test_skip_does_not_count_towards_overlap_but_hides_item(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 1))
    item = store.next_item("ann", overlap=1)
    store.add_judgment("ann", item, "skip")
    assert store.next_item("ann", overlap=1) is None
    assert store.next_item("bob", overlap=1).id == item.id


def test_undo_last(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 2))
    first = store.next_item("ann")
    store.add_judgment("ann", first, "A")
    second = store.next_item("ann")
    store.add_judgment("ann", second, "tie")
    back = store.undo_last("ann")
    assert back.id == second.id
    assert [j["choice"] for j in store.judgments()] == ["A"]
    assert store.next_item("ann").id == second.id
    assert store.undo_last("bob") is None


def test_bad_choice_and_name(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 1))
    item = store.next_item("ann")
    with pytest.raises(ValueError, match="choice"):
        store.add_judgment("ann", item, "C")
    with pytest.raises(ValueError, match="annotator"):
        store.add_judgment("  ", item, "A")


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data folder's parent should be")
    with pytest.raises(StoreError, match="not writable"):
        Store(blocker / "data")


def test_cohen_kappa_known_values():
    # the classic 2x2 example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa 0.4
    pairs = [("A", "A")] * 20 + [("A", "B")] * 5 + [("B", "A")] * 10 + [("B", "B")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([("A", "A"), ("B", "B")]) == pytest.approx(1.0)
    assert cohen_kappa([("A", "A")] * 3) is None


def test_fleiss_kappa_known_value():
    # Wikipedia's worked example: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[c for c, n in zip("abcde", row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.210, abs=1e-3)


def test_agreement_picks_method(tmp_path):
    two = {"i1": {"x": "A", "y": "A"}, "i2": {"x": "B", "y": "A"}, "i3": {"x": "B", "y": "B"}}
    result = agreement(two)
    assert result.method == "cohen" and result.items == 3 and result.observed == pytest.approx(2 / 3)
    three = {"i1": {"x": "A", "y": "A", "z": "A"}, "i2": {"x": "B", "y": "B", "z": "A"}}
    assert agreement(three).method == "fleiss"
    assert agreement({"i1": {"x": "A"}}).method == "none"


def test_disagreements_and_frame(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 2))
    for name, choices in (("ann", ["A", "B"]), ("bob", ["A", "A"])):
        for choice in choices:
            store.add_judgment(name, store.next_item(name, overlap=2), choice)
    dis = store.disagreements()
    assert len(dis) == 1 and "ann: B" in dis.votes[0]
    frame = store.judgments_frame(annotator="bob")
    assert len(frame) == 2 and set(frame.annotator) == {"bob"}
    assert len(store.judgments_frame(choice="B")) == 1
    assert store.agreement().method == "cohen"


def test_items_from_dataset(tmp_path):
    (tmp_path / "ds" / "test" / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16)).save(tmp_path / "ds" / "test" / "images" / f"{i:08d}.jpg")
    formats.write_jsonl(tmp_path / "ds" / "test_Q1.jsonl", [formats.q1_conversation(f"{i:08d}", f"{i:08d}.jpg", "jar")
                                                            for i in range(3)])
    formats.write_jsonl(tmp_path / "ds" / "test_dpo.jsonl", [formats.clarity_pair(f"{i:08d}.jpg", i % 2 == 0)
                                                             for i in range(3)])
    items = items_from_dataset(tmp_path / "ds")
    assert len(items) == 6
    pairs = [i for i in items if i.ready]
    assert len(pairs) == 3 and all(Path(i.image).exists() for i in items)
    assert {i.reference for i in items if not i.ready} == {"The object is jar."}
    with pytest.raises(StoreError, match="does not exist"):
        items_from_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no JSONL"):
        items_from_dataset(tmp_path / "empty")
    (tmp_path / "ds" / "test" / "images" / "00000001.jpg").unlink()
    with pytest.raises(StoreError, match="not found"):
        items_from_dataset(tmp_path / "ds")


# --- what the annotator saw is what is stored (issue 19) ----------------------------------------------------------
def test_candidates_are_written_once(tmp_path):
    """A second writer (the background preparer, another annotator's request) never replaces an item's answers."""
    store = Store(tmp_path / "data")
    bare = Item("x", make_items(tmp_path / "img", 1)[0].image, prompts.Q1)
    store.add_items([bare])
    first = store.set_candidates(bare, "The object is jar.", "The object is can.", "sample:0", "sample:1", "m")
    again = store.set_candidates(bare, "The object is bowl.", "The object is knife.", "sample:0", "sample:1", "m")
    assert (again.candidate_a, again.candidate_b) == ("The object is jar.", "The object is can.")
    assert again.version == first.version == store.item("x").version != ""


def test_judgment_must_name_the_answers_that_were_shown(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 2))
    item = store.next_item("ann")
    with pytest.raises(StaleJudgment, match="not this item's answers"):
        store.add_judgment("ann", item.id, "A", shown="0123456789ab")
    assert store.judgments() == []
    row = store.add_judgment("ann", item.id, "B", shown=item.version)
    stored = store.judgments()[0]
    assert stored["id"] == row and (stored["candidate_a"], stored["candidate_b"]) == (item.candidate_a, item.candidate_b)


def test_a_second_key_press_is_refused_not_applied_to_the_next_item(tmp_path):
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 3))
    first = store.next_item("ann")
    store.add_judgment("ann", first.id, "A", shown=first.version)
    with pytest.raises(StaleJudgment, match="already judged"):  # the same press again, before the screen changed
        store.add_judgment("ann", first.id, "A", shown=first.version)
    second = store.next_item("ann")  # now on screen
    with pytest.raises(StaleJudgment, match="already judged"):  # a late press still naming the first item
        store.add_judgment("ann", first.id, "both_bad", "The object is jar.", shown=first.version)
    third = next(i for i in store.items() if i.id not in (first.id, second.id))
    with pytest.raises(StaleJudgment, match="no longer on your screen"):  # an item this annotator was never shown
        store.add_judgment("ann", third.id, "A", shown=third.version)
    assert [(j["item_id"], j["choice"]) for j in store.judgments()] == [(first.id, "A")]
    store.add_judgment("ann", second.id, "B", shown=second.version)
    assert store.undo_last("ann").id == second.id and store.screen("ann").id == second.id  # undo: on screen again
    store.add_judgment("ann", second.id, "tie", shown=second.version)
    assert [j["choice"] for j in store.judgments()] == ["A", "tie"]


def test_export_snapshot_creates_and_deletes_nothing_beside_the_database(tmp_path):
    """A closed database: the export reads it without creating -wal / -shm files beside it."""
    from occmllm.export import export

    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 2))
    item = store.next_item("ann")
    store.add_judgment("ann", item, "A")
    store.close()
    before = sorted(os.listdir(tmp_path / "data"))
    assert not any(name.endswith(("-wal", "-shm")) for name in before)
    summary = export(tmp_path / "data", tmp_path / "out")
    assert summary.pairs == 1 and sorted(os.listdir(tmp_path / "data")) == before


def test_export_beside_a_live_server_loses_nothing(tmp_path):
    """A live writer (another process, its WAL not checkpointed): the export sees every acknowledged judgment and
    leaves the -wal and -shm files alone; judgments acknowledged after the export survive a kill -9."""
    store = Store(tmp_path / "data")
    store.add_items(make_items(tmp_path / "img", 6))
    store.close()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from occmllm.store import Store
        s = Store({str(tmp_path / 'data')!r})
        s._db().execute("PRAGMA wal_autocheckpoint=0")
        for line in sys.stdin:
            item = s.next_item(line.strip())
            print(s.add_judgment(line.strip(), item.id, "A", shown=item.version), flush=True)
    """)
    live = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    acked = []
    for name in ("ann", "bob", "cat"):
        live.stdin.write(name + "\n")
        live.stdin.flush()
        acked.append(int(live.stdout.readline()))
    before = sorted(os.listdir(tmp_path / "data"))
    assert {"annotations.sqlite-wal", "annotations.sqlite-shm"} <= set(before)
    run = subprocess.run([sys.executable, "-m", "data_tools.export", "--db", str(tmp_path / "data"), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "3 preference pairs" in run.stdout and sorted(os.listdir(tmp_path / "data")) == before
    for name in ("dan", "eve"):  # the server goes on acknowledging into its WAL
        live.stdin.write(name + "\n")
        live.stdin.flush()
        acked.append(int(live.stdout.readline()))
    os.kill(live.pid, signal.SIGKILL)
    live.wait()
    assert set(acked) <= Store(tmp_path / "data").judgment_ids()
