"""The loop the studio exists for, in a real browser: annotate the default model's sampled answers by keyboard in
Chromium, download the export zip from the Export tab, and train every stage that reads such data on it (stages 1,
3a and 4a of train/run_all.py, each from a fresh --out; tests/train/export_training.py checks that the parameters of
exactly the stage's parts changed)."""

import shutil
import zipfile

import pytest

from occmllm import prompts
from tests.demo.conftest import chromium_page, free_port, make_q1_dataset


@pytest.fixture(scope="module")
def q1_app(tmp_path_factory):
    from demo.app import serve
    from demo.studio import Studio, StudioConfig

    root = tmp_path_factory.mktemp("q1-studio")
    studio = Studio(StudioConfig(root / "data", expert="none", dataset=make_q1_dataset(root / "dataset", n=8)))
    studio.model("default")
    app, url = serve(studio, port=free_port(), block=False, quiet=True)
    yield studio, url.rstrip("/")
    app.close()


def test_an_export_made_in_chromium_trains_stages_1_3a_4a(q1_app, tmp_path):
    from tests.train.export_training import train_each_stage_on_export

    studio, url = q1_app
    # per item, by keyboard: accept A, accept B, correct both, prefer A but correct it, and again
    plan = ["1", "2", "fix", "1+fix", "1", "fix", "2", "4+fix"]
    seen = []  # per step: the answers on the screen and the note after the key press (printed when a check fails)
    with chromium_page(url, wait_for=None, accept_downloads=True) as page:
        page.get_by_role("tab", name="Annotate").click()
        page.fill("#name input, #name textarea", "kim")
        page.click("#btn-start")
        for step in plan:  # each step waits for its judgment's acknowledgement before the next key press
            try:
                page.wait_for_selector("#item-photo img", timeout=60000)  # after 'preparing', the item comes by itself
            except Exception as error:
                raise AssertionError("\n".join(seen + [f"{step}: no photo; note {page.inner_text('#note')!r}, "
                                                          f"{page.inner_text('#question')!r}"])) from error
            shown = (page.inner_text("#cand-a .cand-text"), page.inner_text("#cand-b .cand-text"))
            fix = next(prompts.identify_answer(c) for c in prompts.CLASSES if prompts.identify_answer(c) not in shown)
            page.locator("#guidelines").click()  # away from the text box: the keys are shortcuts
            if "fix" in step:
                page.keyboard.press("e")
                page.keyboard.press("Control+A")
                page.keyboard.type(fix)
                page.keyboard.press("Enter" if step == "fix" else "Escape")  # Enter: it is neither A nor B -> both bad
            if step[0] in "124":
                page.keyboard.press(step[0])
            # the app's own message for this judgment: the store's row number, one per step in this fresh store (the
            # note also shows Gradio's timer while the request runs, over the previous message: not an answer)
            page.wait_for_function("(row) => { const b = document.querySelector('#note .banner'); "
                                   "return b !== null && b.innerText.startsWith(`saved #${row}:`); }",
                                   arg=len(seen) + 1, timeout=40000)
            seen.append(f"{step}: {shown} -> {page.inner_text('#note')!r}")
        page.get_by_role("tab", name="Export").click()
        page.click("#btn-export")
        page.wait_for_function("() => document.querySelector('#export-note').innerText.includes('validated')",
                               timeout=60000)
        with page.expect_download() as download:
            page.locator("#export-file a").first.click()
        archive = tmp_path / "export.zip"
        download.value.save_as(archive)

    judged = [j for j in studio.store.judgments() if j["annotator"] == "kim"]
    expected = {"1": "A", "2": "B", "fix": "both_bad", "1+fix": "A", "4+fix": "both_bad"}
    assert [(j["choice"], j["correction"] is not None) for j in judged] == [(expected[s], "fix" in s) for s in plan], (
        "\n".join(seen + [str((j["id"], j["item_id"], j["choice"], j["correction"])) for j in judged]))
    export = tmp_path / "export"
    zipfile.ZipFile(archive).extractall(export)
    assert {"preferences.jsonl", "sft.jsonl", "labels.jsonl", "self_correction.jsonl"} <= {p.name for p in export.iterdir()}
    printed = train_each_stage_on_export(export, tmp_path / "runs")
    assert "labels.jsonl" in printed["4a"] and "self_correction.jsonl" in printed["4a"]
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
