"""The app driven through gradio_client: explore (streamed steps, 3D, trace), bad input, annotate, review, export."""

import json
import subprocess
import sys
import time
import zipfile

import pytest
from gradio_client import Client, handle_file

from occmllm.validate import validate
from demo.studio import Preparing, Studio, StudioConfig, StudioError, read_users
from occmllm import prompts

EXPLORE = dict(model_name="default", expert_spec="box", force=True, desc=False, do_sample=False, temp=1.0, p=1.0,
               fused=False)


def explore(client, image, **overrides):
    args = {**EXPLORE, **overrides}
    job = client.submit(handle_file(image), *args.values(), api_name="/explore")
    updates = list(job)
    return updates, job.outputs()[-1]


def test_explore_streams_steps_3d_and_trace(served, photo):
    _, url = served
    client = Client(url, verbose=False)
    updates, (status, steps, final, mesh, renders, trace) = explore(client, photo)
    assert len(updates) >= 4, "steps arrive one by one, not all at the end"
    assert "Model: default" in status
    for title in ("Identify", "Self-assessment", "3D reconstruction", "Identify on the render", "Decision"):
        assert title in steps
    assert "Final decision" in final and ("kept" in final or "changed by 3D" in final)
    assert mesh.endswith(".glb") and open(mesh, "rb").read(4) == b"glTF"
    assert len(renders) == 2  # the render the model re-read + the strip of extra views
    data = json.load(open(trace))
    assert [s["name"] for s in data["steps"]][:2] == ["identify", "reflect"] and data["used_3d"]
    probs = data["steps"][0]["info"]["classes"]  # the eight classes' probabilities, shown beside the answer
    assert sorted(probs) == sorted(prompts.CLASSES) and abs(sum(probs.values()) - 1) < 1e-3
    clarity = data["steps"][1]["info"]["clarity"]  # and how sure its self-assessment is
    assert list(clarity) == [prompts.YES, prompts.NO] and abs(sum(clarity.values()) - 1) < 1e-3
    # photo and render, one bar per class, and the self-assessment's Yes and No
    assert steps.count('class="probs-row') == 2 * len(prompts.CLASSES) + 2 and "Answer probabilities" in steps
    _, (status, steps, final, *_rest) = explore(client, photo, fused=True)  # decided by photo and render together
    assert "photo and render read together" in steps and "On the render" in steps


def test_bad_uploads_give_a_message_and_the_app_keeps_serving(served, tmp_path, photo):
    _, url = served
    client = Client(url, verbose=False)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    from PIL import Image

    Image.new("RGB", (2, 2)).save(tiny)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(open(photo, "rb").read()[:300])
    for bad in (text, tiny, truncated):
        _, (status, steps, *_rest) = explore(client, str(bad))
        assert "banner-error" in status and bad.name in status, status
    _, (status, *_rest) = explore(client, photo, expert_spec="none", force=False, model_name=str(tmp_path / "nope"))
    assert "cannot be loaded" in status and "not found" in status
    _, (status, steps, final, *_rest) = explore(client, photo)
    assert "Final decision" in final, "still serving after bad input"


def test_annotate_overlap_undo_review_export(served, tmp_path):
    studio, url = served
    ann, bob = Client(url, verbose=False), Client(url, verbose=False)
    first = ann.predict("ann", 2, api_name="/start")
    assert "Is it clear" in first[3] and first[6] in ("Yes.", "No.")
    saved = ann.predict("ann", 2, first[6], first[7], api_name="/judge_A")
    assert "saved #" in saved[0]
    undone = ann.predict("ann", 2, api_name="/undo")
    assert "undone" in undone[0] and undone[3] == first[3]
    seen = set()
    for client, name in ((ann, "ann"), (bob, "bob")):
        out = client.predict(name, 2, api_name="/start")
        while "Nothing left" not in out[3]:
            image = out[2]
            assert (name, image) not in seen
            out = client.predict(name, 2, out[6], out[7], api_name="/judge_A")
            seen.add((name, image))
    judged = studio.store.judgments()
    assert len(judged) == 12 and {j["annotator"] for j in judged} == {"ann", "bob"}
    kappa, counts, table, disagreements, _ = ann.predict("", "", "", api_name="/review")
    assert "kappa" in kappa
    note, archive = ann.predict(api_name="/export")
    assert "validated" in note and "ok" in note, note
    folder = tmp_path / "export"
    zipfile.ZipFile(archive).extractall(folder)
    assert validate([folder / "meta.json", folder / "preferences_trl.jsonl"]).errors == []
    cli = subprocess.run([sys.executable, "-m", "data_tools.validate", str(folder / "meta.json")], capture_output=True,
                         text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_review_answers_come_in_the_order_asked(served, monkeypatch):
    """Two review requests (a filter set, then at once another): the second is answered after the first even when
    the first is slow, so the page ends on the filters set last (one queue for the Review view)."""
    studio, url = served
    original, calls, done = studio.store.judgments_frame, [], []

    def first_slow(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2)
        return original(*args, **kwargs)

    monkeypatch.setattr(studio.store, "judgments_frame", first_slow)
    client = Client(url, verbose=False)
    first = client.submit("", "", "", api_name="/review", result_callbacks=[lambda *_: done.append("first")])
    deadline = time.time() + 30
    while not calls and time.time() < deadline:  # the first request is being answered
        time.sleep(0.05)
    second = client.submit("", "", "", api_name="/review", result_callbacks=[lambda *_: done.append("second")])
    first.result(timeout=60), second.result(timeout=60)
    assert len(calls) == 2 and done == ["first", "second"]


def test_bad_dataset_folder_in_page(served, tmp_path):
    _, url = served
    client = Client(url, verbose=False)
    assert "does not exist" in client.predict(str(tmp_path / "missing"), api_name="/load_dataset")
    (tmp_path / "empty").mkdir()
    assert "no JSONL" in client.predict(str(tmp_path / "empty"), api_name="/load_dataset")


def test_start_errors_are_clear(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StudioError, match="not writable"):
        Studio(StudioConfig(blocker / "data"))
    with pytest.raises(StudioError, match="does not exist"):
        Studio(StudioConfig(tmp_path / "data", dataset=tmp_path / "nope"))
    (tmp_path / "users.txt").write_text("alice:secret\nbroken line\n")
    with pytest.raises(StudioError, match="users.txt:2"):
        read_users(tmp_path / "users.txt")
    for args, message in ((["--model", str(tmp_path / "missing")], "model folder not found"),
                          (["--data", str(blocker / "data")], "not writable"),
                          (["--dataset", str(tmp_path / "nope"), "--data", str(tmp_path / "d")], "does not exist")):
        run = subprocess.run([sys.executable, "-m", "demo", *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and message in run.stderr, run.stderr


def test_uploaded_batch_gets_model_candidates(tmp_path):
    import shutil

    from demo.explore_tab import EXAMPLES

    studio = Studio(StudioConfig(tmp_path / "data"))
    good = tmp_path / "a.jpg"  # a photo of the kind the default model reads (a plain colour square is not one:
    shutil.copy(EXAMPLES / "bowl_occluded.jpg", good)  # the v9 model samples no readable answer for it)
    bad = tmp_path / "b.jpg"
    bad.write_text("nope")
    message = studio.add_photos([str(good), str(bad)])
    assert "added 1" in message and "b.jpg" in message
    first = studio.next_item("ann", 1)  # answers are made in the background, never on the judgment path
    item = wait_for_item(studio, "ann", 1)
    assert isinstance(first, Preparing) or first == item
    assert item.ready and item.candidate_a != item.candidate_b and item.source_a.startswith("sample")
    assert prompts.readable_answer(item.question, item.candidate_a)
    assert prompts.readable_answer(item.question, item.candidate_b)


def wait_for_item(studio, name, k, seconds=120):
    deadline = time.time() + seconds
    while isinstance(item := studio.next_item(name, k), Preparing):
        assert time.time() < deadline, "no answers prepared in time"
        time.sleep(0.1)
    return item


def test_users_running_the_cot_at_once_take_turns_step_by_step(served, photo, tmp_path):
    """Two users' runs advanced in turn, a step each (what the lock now allows: it is held while a step computes,
    not while the page shows it), give each user exactly the steps and answers of their run alone."""
    import numpy as np
    from PIL import Image

    studio, _ = served
    other = tmp_path / "other.jpg"
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(other)
    args = ("default", "box", True, False, False, 1.0, 1.0)

    def summary(events):
        trace = events[-1].trace
        return [(s.name, s.raw, s.parsed, s.info.get("classes")) for s in trace.steps], trace.final

    alone = [summary(list(studio.run(image, *args))) for image in (photo, str(other))]
    runs = {k: studio.run(image, *args) for k, image in enumerate((photo, str(other)))}
    events: list[list] = [[], []]
    while runs:
        for k, run in list(runs.items()):
            event = next(run)
            assert not studio._lock.locked(), "no lock held while a step is being shown"
            events[k].append(event)
            if hasattr(event, "trace"):  # the run's last event
                del runs[k]
    assert [summary(e) for e in events] == alone
