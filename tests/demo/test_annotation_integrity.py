"""What an annotator saw is exactly what is stored (issue 19): answers made once, in the background, readable only;
a judgment names what was on screen and a second key press is refused; the server never serves the database."""

import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from gradio_client import Client

from demo.studio import Preparing, Studio, StudioConfig
from occmllm import prompts
from occmllm.store import Item, item_id
from occmllm.vlm import Candidate
from tests.demo.test_app_client import wait_for_item


class ScriptedVLM:
    """A model whose samples are given by the test (fragments included); `gate` holds generation until set."""

    name = "scripted"

    def __init__(self, samples: list[str], posterior=None):
        self.samples, self.calls = samples, 0
        self.posterior = posterior if posterior is not None else np.linspace(0.2, 0.05, len(prompts.CLASSES))
        self.gate = threading.Event()
        self.gate.set()

    def sample_batch(self, images, question, n=4, temperature=1.0, top_p=1.0, **_):
        self.gate.wait(60)
        self.calls += 1
        return [[Candidate(text, -float(i), 4) for i, text in enumerate(self.samples[:n])] for _ in images]

    def class_posterior(self, images, classes=None, batch_size=64):
        return np.array([self.posterior] * len(images))


def scripted_studio(tmp_path, vlm, n=3, question=prompts.Q1) -> Studio:
    from PIL import Image

    studio = Studio(StudioConfig(tmp_path / "data"))
    studio._models["default"] = vlm
    items = []
    for i in range(n):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (32, 32), (10 * i, 80, 120)).save(path)
        items.append(Item(item_id(str(path), question), str(path), question))
    studio.store.add_items(items)
    return studio


@pytest.mark.parametrize("samples", [["\ufffd.", ">.", "k.", "The object is jar.", "The object is jar"],
                                     ["\ufffd.", ">.", "k.", "j"]])
def test_fragments_never_become_candidates(tmp_path, samples):
    """Only class sentences are shown: fragments are passed over; a model with one or no readable answer gets its
    most probable other classes (class posterior) instead."""
    studio = scripted_studio(tmp_path, ScriptedVLM(samples), n=1)
    item = wait_for_item(studio, "ann", 1)
    for answer in (item.candidate_a, item.candidate_b):
        assert prompts.readable_answer(item.question, answer), answer
    assert prompts.parse_object(item.candidate_a) != prompts.parse_object(item.candidate_b)
    if "The object is jar." in samples:
        assert item.candidate_a == "The object is jar." and item.source_b.startswith("class posterior")


def test_clarity_items_get_yes_and_no(tmp_path):
    studio = scripted_studio(tmp_path, ScriptedVLM(["No.", "no", "N"]), n=1, question=prompts.Q6_PREFERENCE)
    item = wait_for_item(studio, "ann", 1)
    assert (item.candidate_a, item.candidate_b) == ("No.", "Yes.")


def test_generation_never_runs_on_the_judgment_path(tmp_path):
    """While the model is busy, the annotator gets 'preparing' at once (no request waits for generation); the item
    appears once its answers exist, and they are the ones stored."""
    vlm = ScriptedVLM(["The object is jar.", "The object is can."])
    vlm.gate.clear()
    studio = scripted_studio(tmp_path, vlm, n=2)
    assert isinstance(studio.next_item("ann", 1), Preparing)
    assert isinstance(studio.next_item("ann", 1), Preparing) and vlm.calls == 0
    vlm.gate.set()
    item = wait_for_item(studio, "ann", 1)
    assert (item.candidate_a, item.candidate_b) == ("The object is jar.", "The object is can.")
    again = studio.prepare(item)  # preparing again (a second thread, a restart) changes nothing
    assert again.version == item.version == studio.store.item(item.id).version


def test_api_double_press_and_stale_screen_are_refused(served):
    studio, url = served
    client = Client(url, verbose=False)
    out = client.predict("dora", 2, api_name="/start")
    token = out[7]
    saved = client.predict("dora", 2, out[6], token, api_name="/judge_A")
    assert "saved #" in saved[0]
    again = client.predict("dora", 2, out[6], token, api_name="/judge_B")  # the same screen, pressed again
    assert "not saved" in again[0] and "already judged" in again[0]
    assert again[7] == saved[7], "the annotator's current item is shown again"
    wrong = client.predict("dora", 2, "", saved[7].split(":")[0] + ":000000000000", api_name="/judge_A")
    assert "not saved" in wrong[0] and "not this item's answers" in wrong[0]
    mine = [j for j in studio.store.judgments() if j["annotator"] == "dora"]
    assert [j["choice"] for j in mine] == ["A"], "one key press, one judgment"
    current = studio.store.item(saved[7].split(":")[0])
    assert not [j for j in mine if j["item_id"] == current.id], "nothing landed on the item not yet judged"


def test_database_is_never_served(served):
    studio, url = served
    client = Client(url, verbose=False)
    out = client.predict("erin", 2, api_name="/start")
    studio.store.add_judgment("erin", out[7].split(":")[0], "A", shown=out[7].split(":")[1])  # the WAL has content
    database = studio.store.path.resolve()
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        assert path.exists()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/gradio_api/file={path}")
        assert refused.value.code == 403, path
    image = studio.store.items()[0].image  # the items' images are served
    assert urllib.request.urlopen(f"{url}/gradio_api/file={image}").status == 200
