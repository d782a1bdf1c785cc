"""The app in a real browser (Playwright + Debian's Chromium, headless): upload a photo, see the steps and the 3D
canvas, annotate with the keyboard, export."""

import zipfile

import pytest

from occmllm.validate import validate
from tests.demo.conftest import chromium_page


@pytest.fixture(scope="module")
def page(served):
    with chromium_page(served[1], accept_downloads=True) as page:
        yield page


def test_upload_run_steps_and_3d_canvas(page, photo):
    page.set_input_files("#photo input[type=file]", photo)
    page.wait_for_selector("#photo img", timeout=40000)
    page.get_by_role("button", name="Settings").click()
    page.get_by_label("Force 3D").check()
    page.click("#run")
    page.wait_for_selector("#steps .step-identify", timeout=60000)
    page.wait_for_selector("#final .final-answer", timeout=60000)
    assert page.locator("#steps .step").count() == 5  # identify, reflect, reconstruct, identify_3d, decide
    page.wait_for_selector("#viewer canvas", timeout=30000)
    assert "Model: default" in page.inner_text("#status")  # which model answered is on screen


def test_annotate_with_keyboard_and_export(page, served, tmp_path):
    studio, _ = served
    page.get_by_role("tab", name="Annotate").click()
    page.fill("#name input, #name textarea", "kim")
    page.click("#btn-start")
    page.wait_for_selector("#cand-a .cand-text", timeout=40000)
    before = len(studio.store.judgments())
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('#note') && document.querySelector('#note').innerText.includes('saved')",
                           timeout=40000)
    page.keyboard.press("u")
    page.wait_for_function("() => document.querySelector('#note').innerText.includes('undone')", timeout=40000)
    page.keyboard.press("2")
    page.wait_for_function("() => document.querySelector('#note').innerText.includes('B better')", timeout=40000)
    before_note = page.inner_text("#note")
    page.keyboard.press("e")
    page.keyboard.press("Control+A")
    page.keyboard.type("No.")
    page.keyboard.press("Enter")
    saved = page.wait_for_function(
        "(before) => { const m = document.querySelector('#note').innerText.match(/saved #(\\d+)/); "
        "return m && !before.includes('saved #' + m[1] + ':') && Number(m[1]); }", arg=before_note, timeout=40000)
    typed = next(j for j in studio.store.judgments() if j["id"] == saved.json_value())
    # "No." picks the candidate that says it, or corrects both
    picked = {"A": typed["candidate_a"], "B": typed["candidate_b"], "both_bad": typed["correction"]}[typed["choice"]]
    assert typed["annotator"] == "kim" and picked == "No.", typed
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("s")
    page.wait_for_function("() => document.querySelector('#note').innerText.includes('skipped')", timeout=40000)
    mine = [j for j in studio.store.judgments() if j["annotator"] == "kim"]
    assert len(studio.store.judgments()) == before + 3 and [j["choice"] for j in mine][-1] == "skip"
    assert "kbd" in page.inner_html("#annotate-panel")  # the shortcuts are shown on screen

    page.get_by_role("tab", name="Review").click()
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function("() => document.querySelector('#judgments').innerText.includes('kim')", timeout=40000)

    page.get_by_role("tab", name="Export").click()
    page.click("#btn-export")
    page.wait_for_function("() => document.querySelector('#export-note').innerText.includes('validated')", timeout=30000)
    with page.expect_download() as download:
        page.locator("#export-file a").first.click()
    archive = tmp_path / "export.zip"
    download.value.save_as(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / "export")
    assert validate([tmp_path / "export" / "meta.json"]).errors == []


def test_a_double_key_press_stores_one_judgment(page, served):
    """Two presses of "1" before the screen updates: one judgment, on the item shown, with the answers shown."""
    studio, _ = served
    page.get_by_role("tab", name="Annotate").click()
    page.fill("#name input, #name textarea", "quick")
    page.click("#btn-start")
    page.wait_for_function("() => document.querySelector('#progress').innerText.includes('(quick)')", timeout=40000)
    page.wait_for_selector("#cand-a .cand-text", timeout=40000)
    seen = (page.inner_text("#cand-a .cand-text"), page.inner_text("#cand-b .cand-text"))
    page.locator("body").click(position={"x": 5, "y": 5})
    page.evaluate("""() => { for (let i = 0; i < 2; i++)
                               document.dispatchEvent(new KeyboardEvent('keydown', {key: '1', bubbles: true})); }""")
    # the note shows whichever answer came last: "saved #N" (first press) or the second press's refusal
    page.wait_for_function("() => { const t = document.querySelector('#note').innerText;"
                           " return t.includes('saved #') || t.includes('nothing more was stored'); }", timeout=40000)
    page.wait_for_timeout(1500)  # let the second request finish too
    mine = [j for j in studio.store.judgments() if j["annotator"] == "quick"]
    assert len(mine) == 1 and mine[0]["choice"] == "A", mine
    assert (mine[0]["candidate_a"], mine[0]["candidate_b"]) == seen and mine[0]["correction"] is None
