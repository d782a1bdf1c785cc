"""The Annotate tab: A/B judgments of two answers to one question about a photo, with keyboard shortcuts.

    python -m demo --dataset data/synth --overlap 2      # then the Annotate tab
    API endpoints: "/start", "/judge_A", "/judge_B", "/judge_tie", "/judge_both_bad", "/judge_skip", "/judge_enter",
    "/judge_enter_key", "/undo", "/load_dataset", "/add_photos"

The annotator's name (or their login), k annotators per item, the item's photo, question and candidates A and B; keys
1-4 judge, e edits the correction, Enter submits it, s skips, u undoes (views.SHORTCUT_JS). Every judgment names the
item and the version of its answers that were on the screen ("shown"), and the store refuses one that names anything
else. While the annotator's next items are still being given answers in the background, a timer polls until one is
ready. On the right: the guidelines and the panel that adds a dataset folder or a batch of photos to the store.
"""

from __future__ import annotations

import gradio as gr

from demo import views
from demo.photo_input import PhotoInput
from demo.studio import CANDIDATE_MODES, Preparing, Studio, StudioError
from occmllm import prompts
from occmllm.images import ImageError
from occmllm.store import StaleJudgment, StoreError

QUESTIONS = {"identify": prompts.Q1, "clarity": prompts.Q6_PREFERENCE}  # the question asked about uploaded photos
CHOICE_LABELS = {"A": "A better", "B": "B better", "tie": "tie", "both_bad": "both bad", "skip": "skipped"}


def build(studio: Studio, app: gr.Blocks) -> gr.Tab:
    """The Annotate tab inside `app` (loading a dataset adds its image folders to what `app` may serve)."""
    config = studio.config
    login = bool(config.users)
    with gr.Tab("Annotate", id="annotate") as tab:
        # what is on this annotator's screen, "ITEM_ID:VERSION" (the hash of its two answers), sent back with every
        # judgment from the page itself: the server refuses a judgment that names anything else
        shown = gr.Textbox("", visible=False, elem_id="shown")
        waiting = gr.Timer(1.0, active=False)  # polls while the annotator's next items are being prepared
        with gr.Row(equal_height=False, elem_id="annotate-panel"):
            with gr.Column(scale=8):
                with gr.Row():
                    name = gr.Textbox(label="Your name", placeholder="who is annotating", scale=3,
                                      visible=not login, elem_id="name")
                    overlap = gr.Number(config.overlap, label="Annotators per item (k)", precision=0,
                                        minimum=1, maximum=10, scale=1, elem_id="overlap")
                    start = gr.Button("Start / next item", variant="primary", scale=1, elem_id="btn-start")
                progress = gr.HTML("", elem_id="progress")
                note = gr.HTML(views.banner("Enter your name and press <b>Start</b>." if not login else
                                            "Press <b>Start</b> to get your first item.", "info"), elem_id="note")
                with gr.Row(equal_height=False):
                    item_photo = PhotoInput(label="Photo", interactive=False, height=280, scale=2, elem_id="item-photo")
                    with gr.Column(scale=3):
                        question = gr.HTML('<div class="empty">No item yet.</div>', elem_id="question")
                        cand_a = gr.HTML("", elem_id="cand-a")
                        cand_b = gr.HTML("", elem_id="cand-b")
                with gr.Row(elem_id="choice-row"):
                    btn_a = gr.Button("1 · A better", elem_id="btn-a")
                    btn_b = gr.Button("2 · B better", elem_id="btn-b")
                    btn_tie = gr.Button("3 · Tie", elem_id="btn-tie")
                    btn_bad = gr.Button("4 · Both bad", elem_id="btn-bad")
                with gr.Row():
                    correction = gr.Textbox(label="Corrected answer (e to edit, Enter to submit)", lines=1,
                                            scale=5, elem_id="correction")
                    submit = gr.Button("Enter · submit correction", scale=2, elem_id="btn-submit")
                with gr.Row():
                    skip = gr.Button("s · Skip", size="sm", elem_id="btn-skip")
                    undo = gr.Button("u · Undo last", size="sm", elem_id="btn-undo")
                gr.HTML(views.SHORTCUTS)
            with gr.Column(scale=4):
                gr.Markdown(views.GUIDELINES, elem_id="guidelines")
                with gr.Accordion("Items to annotate", open=studio.store.count_items() == 0):
                    gr.Markdown(f"{studio.store.count_items()} items in the store. Candidates for new items: "
                                f"{CANDIDATE_MODES.get(config.candidates, config.candidates)}.")
                    folder = gr.Textbox(label="Dataset folder", value=str(config.dataset or ""),
                                        placeholder="e.g. data/synth (seed JSONL files + images)")
                    load = gr.Button("Load dataset", size="sm")
                    uploads = gr.File(label="Or a batch of photos", file_count="multiple", file_types=["image"])
                    upload_question = gr.Radio(list(QUESTIONS), value="identify", label="Question for the photos")
                    add = gr.Button("Add photos", size="sm")
                    sources_note = gr.HTML("")

        item_outputs = [note, progress, item_photo, question, cand_a, cand_b, correction, shown, waiting]
        judging_events(studio, [name, overlap], item_outputs, start, waiting,
                       {"A": btn_a, "B": btn_b, "tie": btn_tie, "both_bad": btn_bad, "skip": skip, "enter": submit},
                       correction, shown, undo)
        sources_events(studio, app, folder, load, uploads, upload_question, add, sources_note)
    return tab


def judging_events(studio: Studio, base: list, item_outputs: list, start, waiting, buttons: dict, correction, shown,
                   undo) -> None:
    """The judging handlers: start, the timer that polls while answers are prepared, a judgment per button
    (`buttons`: choice -> button; "enter" judges by the correction's text), Enter in the correction box, undo.
    `base`: the annotator's name box and k; `item_outputs`: what item_screen fills."""

    def fail(e):
        return (views.banner(views.esc(e), "error"),) + (gr.skip(),) * (len(item_outputs) - 1)

    def start_fn(typed, k, request: gr.Request):
        try:
            annotator = annotator_name(typed, request)
            k = int(k or 1)
            return item_screen(studio, studio.next_item(annotator, k), annotator, k)
        except (StudioError, ImageError, StoreError, ValueError) as e:
            return fail(e)

    def poll_fn(typed, k, on_screen, request: gr.Request):
        """While preparing: show the next item once it has its answers (nothing changes otherwise)."""
        try:
            annotator = annotator_name(typed, request)
            if on_screen:
                return (gr.skip(),) * (len(item_outputs) - 1) + (gr.Timer(active=False),)
            k = int(k or 1)
            item = studio.next_item(annotator, k)
            if isinstance(item, Preparing):
                return (gr.skip(),) * len(item_outputs)
            return item_screen(studio, item, annotator, k)
        except (StudioError, ImageError, StoreError, ValueError) as e:
            return fail(e)

    def judge_fn(typed, k, choice, text, on_screen, request: gr.Request):
        try:
            annotator = annotator_name(typed, request)
            k = int(k or 1)
            item_id, _, version = (on_screen or "").partition(":")
            item = studio.store.item(item_id) if item_id else None
            if item is None:
                here = studio.store.screen(annotator) or studio.next_item(annotator, k)
                return item_screen(studio, here, annotator, k, "no item was on your screen, nothing was stored: "
                                   "here is your current item", "warn")
            typed_text = (text or "").strip()
            a, b = (item.candidate_a or "").strip(), (item.candidate_b or "").strip()
            if choice == "enter":  # the text decides: A's text, B's text, or a correction of both
                choice = "A" if typed_text == a else "B" if typed_text == b else "both_bad"
            fix = "" if typed_text in (a, b) else typed_text  # the untouched pre-filled answer is no correction
            row = studio.store.add_judgment(annotator, item_id, choice, fix or None, shown=version)
            message = f"saved #{row}: {CHOICE_LABELS[choice]}" + (" with correction" if fix else "")
            return item_screen(studio, studio.next_item(annotator, k), annotator, k, message, "ok")
        except StaleJudgment as e:  # nothing stored: show what the annotator should be looking at
            here = studio.store.screen(annotator) or studio.next_item(annotator, k)
            return item_screen(studio, here, annotator, k, f"not saved: {e}. Your current item is shown.", "warn")
        except (StudioError, ImageError, StoreError, ValueError) as e:
            return fail(e)

    def undo_fn(typed, k, request: gr.Request):
        try:
            annotator = annotator_name(typed, request)
            k = int(k or 1)
            item = studio.store.undo_last(annotator)
            if item is None:
                return item_screen(studio, studio.store.screen(annotator) or studio.next_item(annotator, k),
                                   annotator, k, "nothing to undo", "info")
            return item_screen(studio, item, annotator, k, "undone: your last judgment was removed", "info")
        except (StudioError, StoreError, ValueError) as e:
            return fail(e)

    start.click(start_fn, base, item_outputs, api_name="start")
    waiting.tick(poll_fn, base + [shown], item_outputs, api_visibility="private", show_progress="hidden",
                 queue=False)
    for choice, button in buttons.items():
        button.click(judge_fn, base + [gr.State(choice), correction, shown], item_outputs,
                     api_name=f"judge_{choice}", show_progress="hidden", queue=False)
    correction.submit(judge_fn, base + [gr.State("enter"), correction, shown], item_outputs,
                      api_name="judge_enter_key", show_progress="hidden", queue=False)
    undo.click(undo_fn, base, item_outputs, api_name="undo", show_progress="hidden", queue=False)


def sources_events(studio: Studio, app: gr.Blocks, folder, load, uploads, upload_question, add, note) -> None:
    """The "Items to annotate" panel's handlers: load a dataset folder (its images become servable), add photos."""
    def load_fn(path):
        try:
            message = studio.load_dataset(path.strip())
            app.allowed_paths = list(dict.fromkeys([*app.allowed_paths, *studio.image_folders()]))
            return views.banner(views.esc(message), "ok")
        except StudioError as e:
            return views.banner(views.esc(e), "error")

    def add_fn(files, which):
        try:
            paths = [f if isinstance(f, str) else f.name for f in (files or [])]
            if not paths:
                return views.banner("choose some photos first", "info")
            return views.banner(views.esc(studio.add_photos(paths, QUESTIONS[which])), "ok")
        except (StudioError, StoreError) as e:
            return views.banner(views.esc(e), "error")

    load.click(load_fn, [folder], [note], api_name="load_dataset")
    add.click(add_fn, [uploads, upload_question], [note], api_name="add_photos")


def annotator_name(typed: str, request: gr.Request | None) -> str:
    """The login name when there is one, else the typed name; StudioError when there is neither."""
    user = getattr(request, "username", None) if request is not None else None
    name = (user or typed or "").strip()
    if not name:
        raise StudioError("type your name first (it is stored with every judgment)")
    return name


def item_screen(studio: Studio, item, annotator: str, k: int, message: str = "", kind: str = "ok") -> tuple:
    """The Annotate tab's item outputs for `item` on the annotator's screen (or the empty / preparing panel): note,
    progress, photo, question, candidates A and B, the pre-filled correction, "ITEM_ID:VERSION", the polling timer."""
    progress = views.progress_html(studio.store.progress(annotator, k), annotator, k)
    note = views.banner(message, kind) if message else ""
    if item is None or isinstance(item, Preparing):
        if item is None:
            empty = ('<div class="empty">Nothing left for you. Thank you! Add a dataset or photos on the right, raise '
                     'k, or look at the Review tab.</div>')
        else:
            problem = f"<br>{views.esc(studio.preparer_error)}" if studio.preparer_error else ""
            empty = (f'<div class="empty preparing">Preparing the answers of your next item ({item.waiting} items '
                     f'still without answers)... it appears here by itself.{problem}</div>')
        return (note, progress, None, empty, "", "", "", "", gr.Timer(active=isinstance(item, Preparing)))
    question = prompts.strip_image(item.question)
    return (note, progress, item.image, f'<div class="question">{views.esc(question)}</div>',
            views.candidate_html("A", "1", item.candidate_a, item.source_a),
            views.candidate_html("B", "2", item.candidate_b, item.source_b), item.candidate_a or "",
            f"{item.id}:{item.version}", gr.Timer(active=False))
