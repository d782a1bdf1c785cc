"""OCC-MLLM studio: see how the model reasons about a hand-held object, step by step and in 3D, and collect
preference labels that train it.

    python -m demo                                        # default model, http://127.0.0.1:7860
    python -m demo --dataset data/synth --overlap 2      # annotate a dataset folder, 2 annotators per item
    python -m demo --users users.txt --host 0.0.0.0      # password login for annotators (lines "name:password")
    python -m demo --model path/to/checkpoint --expert learned --data data/studio
    python -m demo --runs runs                           # the Runs tab lists the training runs in runs/

Tabs: Explore (run the CoT on a photo), Annotate (A/B judgments with keyboard shortcuts), Review (table, agreement,
disagreements), Export (zip of preference pairs + SFT conversations, accepted by train/run_all.py --data), Runs (what
training did: results, curves, two runs compared; demo/runs_tab.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _name, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_name, _value)

import gradio as gr  # noqa: E402

from demo import runs_tab, views  # noqa: E402
from demo.studio import (CANDIDATE_MODES, DEFAULT_MODEL, EXPERT_CHOICES, FinishedRun, Preparing, Studio,  # noqa: E402
                         StudioConfig, StudioError, read_users)
from occmllm import prompts  # noqa: E402
from occmllm.images import ImageError  # noqa: E402
from occmllm.store import CHOICES, StaleJudgment, StoreError  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent / "examples"
QUESTIONS = {"identify": prompts.Q1, "clarity": prompts.Q6_PREFERENCE}
CHOICE_LABELS = {"A": "A better", "B": "B better", "tie": "tie", "both_bad": "both bad", "skip": "skipped"}


class PhotoInput(gr.Image):
    """gr.Image that hands a file it cannot decode to the app (as its path) instead of failing in Gradio's own
    preprocessing, so that occmllm.images.load_image can say what is wrong with it in the page."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:  # noqa: BLE001 - the app reports it through load_image
            return getattr(payload, "path", None)


def build_app(studio: Studio) -> gr.Blocks:
    config = studio.config
    login = bool(config.users)

    with gr.Blocks(title="OCC-MLLM studio") as app:
        gr.Markdown("# OCC-MLLM studio\nHow a vision-language model identifies an object held in a hand: it answers, "
                    "asks itself whether the object is clearly visible, and if not, reconstructs it in 3D and looks "
                    "again.", elem_id="title")
        # ------------------------------------------------------------------ Explore
        with gr.Tab("Explore", id="explore"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=320):
                    photo = PhotoInput(label="Photo", type="filepath", sources=["upload", "clipboard", "webcam"],
                                     height=300, elem_id="photo")
                    examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg")) if EXAMPLES.is_dir() else []
                    if examples:
                        gr.Examples(examples=[[p] for p in examples], inputs=[photo], label="Examples")
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    with gr.Accordion("Settings", open=False):
                        model = gr.Dropdown([DEFAULT_MODEL] + ([config.model] if config.model != DEFAULT_MODEL else []),
                                            value=config.model, label="Model", allow_custom_value=True,
                                            info="'default' or the path of a local checkpoint folder")
                        expert = gr.Dropdown(list(dict.fromkeys([config.expert, *EXPERT_CHOICES, *config.experts])),
                                             value=config.expert, label="3D expert", allow_custom_value=True,
                                             info="learned (the shipped v4 expert), learned:v5 (the shipped v5 "
                                                  "expert), learned:FOLDER, oracle:DATA_DIR[:SPLIT], folder:DIR or none")
                        with gr.Row():
                            force_3d = gr.Checkbox(False, label="Force 3D")
                            describe = gr.Checkbox(False, label="Show description step")
                        fuse = gr.Checkbox(False, label="Decide by photo and render together",
                                           info="when a render is read (a 'No', or Force 3D): the class both "
                                                "readings support (the model's class probabilities on the photo "
                                                "and on the render, multiplied), not the render's answer alone. "
                                                "With Force 3D every photo is also read through its render")
                        sample = gr.Checkbox(False, label="Sample instead of greedy decoding")
                        with gr.Row():
                            temperature = gr.Slider(0.1, 2.0, 1.0, step=0.05, label="Temperature")
                            top_p = gr.Slider(0.1, 1.0, 1.0, step=0.05, label="Top-p")
                with gr.Column(scale=7):
                    status = gr.HTML(_model_banner(studio), elem_id="status")
                    steps = gr.HTML(views.steps_html([]), elem_id="steps")
                    final = gr.HTML("", elem_id="final")
                    with gr.Row():
                        viewer = gr.Model3D(label="Reconstructed object (drag to turn)", height=300,
                                            clear_color=(0.13, 0.14, 0.17, 1.0),  # dark, like the renders beside it
                                            elem_id="viewer")
                        renders = gr.Gallery(label="Render the model re-read · extra views", columns=1, height=300,
                                             elem_id="renders")
                    trace_file = gr.File(label="Trace (JSON)", elem_id="trace")
                    mesh_file = gr.File(visible=False, elem_id="mesh-file")  # the GLB, for the API and the viewer

            def explore(image, model_name, expert_spec, force, desc, do_sample, temp, p, fused=False):
                outputs = dict(status=_model_banner(studio), steps=views.steps_html([]), final="", mesh=None,
                               renders=[], trace=None)
                done, mesh = [], None
                try:
                    events = studio.run(image, model_name, expert_spec, force, desc, do_sample, temp, p, fused)
                    outputs["steps"] = views.running_html([], "identify")
                    yield tuple(outputs.values())
                    for event in events:
                        if isinstance(event, FinishedRun):  # the end
                            outputs["steps"] = views.steps_html(done)
                            outputs["final"] = views.final_html(event.trace)
                            outputs["trace"] = event.trace_path
                            outputs["mesh"] = mesh
                            note = event.expert_note
                            if (event.trace.render_missing or note) and (force or any(s.name == "reconstruct" for s in done)):
                                outputs["status"] += views.banner("3D route asked for but not available: " + (
                                    note or done[-2].info.get("message", "no render")), "warn")
                        else:  # a Step
                            done.append(event)
                            mesh = event.files.get("mesh") or mesh
                            if event.name == "reconstruct" and event.files.get("render"):
                                outputs["renders"] = [(event.files["render"], "render re-read by the model")] + (
                                    [(event.files["views"], "views at 0/90/180/270 deg")] if event.files.get("views") else [])
                            outputs["steps"] = views.running_html(done, "next step")
                        yield tuple(outputs.values())
                except (ImageError, StudioError) as e:
                    outputs["status"] = views.banner(views.esc(e), "error")
                    outputs["steps"] = views.steps_html([])
                    yield tuple(outputs.values())

            # The viewer gets the mesh once, after the run, from its own event: Gradio's Model3D never draws when
            # the same value arrives again while its 3D code is still loading (a streamed event sends its last
            # value twice), so the stream fills the hidden mesh_file and a follow-up event copies it over.
            run.click(lambda: None, None, viewer, queue=False, api_visibility="private")
            run.click(explore, [photo, model, expert, force_3d, describe, sample, temperature, top_p, fuse],
                      [status, steps, final, mesh_file, renders, trace_file], api_name="explore").then(
                lambda path: path, mesh_file, viewer, api_visibility="private", show_progress="hidden")

        # ------------------------------------------------------------------ Annotate
        with gr.Tab("Annotate", id="annotate"):
            # what is on this annotator's screen, "ITEM_ID:VERSION" (the hash of its two answers), sent back with
            # every judgment from the page itself: the server refuses a judgment that names anything else
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

            def who(typed: str, request: gr.Request | None) -> str:
                user = getattr(request, "username", None) if request is not None else None
                name_ = (user or typed or "").strip()
                if not name_:
                    raise StudioError("type your name first (it is stored with every judgment)")
                return name_

            def show(item, annotator, k, message="", kind="ok"):
                """The outputs for `item` on the annotator's screen (or the empty / preparing panel)."""
                progress_ = views.progress_html(studio.store.progress(annotator, k), annotator, k)
                note_ = views.banner(message, kind) if message else ""
                if item is None or isinstance(item, Preparing):
                    if item is None:
                        empty = ('<div class="empty">Nothing left for you. Thank you! Add a dataset or photos on the '
                                 'right, raise k, or look at the Review tab.</div>')
                    else:
                        problem = f"<br>{views.esc(studio.preparer_error)}" if studio.preparer_error else ""
                        empty = (f'<div class="empty preparing">Preparing the answers of your next item '
                                 f'({item.waiting} items still without answers)... it appears here by itself.'
                                 f'{problem}</div>')
                    return (note_, progress_, None, empty, "", "", "", "", gr.Timer(active=isinstance(item, Preparing)))
                q = prompts.strip_image(item.question)
                return (note_, progress_, item.image, f'<div class="question">{views.esc(q)}</div>',
                        views.candidate_html("A", "1", item.candidate_a, item.source_a),
                        views.candidate_html("B", "2", item.candidate_b, item.source_b), item.candidate_a or "",
                        f"{item.id}:{item.version}", gr.Timer(active=False))

            def fail(e):
                return (views.banner(views.esc(e), "error"),) + (gr.skip(),) * (len(item_outputs) - 1)

            def start_fn(typed, k, request: gr.Request):
                try:
                    annotator = who(typed, request)
                    k = int(k or 1)
                    return show(studio.next_item(annotator, k), annotator, k)
                except (StudioError, ImageError, StoreError, ValueError) as e:
                    return fail(e)

            def poll_fn(typed, k, on_screen, request: gr.Request):
                """While preparing: show the next item once it has its answers (nothing changes otherwise)."""
                try:
                    annotator = who(typed, request)
                    if on_screen:
                        return (gr.skip(),) * (len(item_outputs) - 1) + (gr.Timer(active=False),)
                    k = int(k or 1)
                    item = studio.next_item(annotator, k)
                    if isinstance(item, Preparing):
                        return (gr.skip(),) * len(item_outputs)
                    return show(item, annotator, k)
                except (StudioError, ImageError, StoreError, ValueError) as e:
                    return fail(e)

            def judge_fn(typed, k, choice, text, on_screen, request: gr.Request):
                try:
                    annotator = who(typed, request)
                    k = int(k or 1)
                    item_id, _, version = (on_screen or "").partition(":")
                    item = studio.store.item(item_id) if item_id else None
                    if item is None:
                        here = studio.store.screen(annotator) or studio.next_item(annotator, k)
                        return show(here, annotator, k, "no item was on your screen, nothing was stored: here is "
                                    "your current item", "warn")
                    typed_text = (text or "").strip()
                    a, b = (item.candidate_a or "").strip(), (item.candidate_b or "").strip()
                    if choice == "enter":  # the text decides: A's text, B's text, or a correction of both
                        choice = "A" if typed_text == a else "B" if typed_text == b else "both_bad"
                    fix = "" if typed_text in (a, b) else typed_text  # the untouched pre-filled answer is no correction
                    row = studio.store.add_judgment(annotator, item_id, choice, fix or None, shown=version)
                    message = f"saved #{row}: {CHOICE_LABELS[choice]}" + (" with correction" if fix else "")
                    return show(studio.next_item(annotator, k), annotator, k, message, "ok")
                except StaleJudgment as e:  # nothing stored: show what the annotator should be looking at
                    here = studio.store.screen(annotator) or studio.next_item(annotator, k)
                    return show(here, annotator, k, f"not saved: {e}. Your current item is shown.", "warn")
                except (StudioError, ImageError, StoreError, ValueError) as e:
                    return fail(e)

            def undo_fn(typed, k, request: gr.Request):
                try:
                    annotator = who(typed, request)
                    k = int(k or 1)
                    item = studio.store.undo_last(annotator)
                    if item is None:
                        return show(studio.store.screen(annotator) or studio.next_item(annotator, k), annotator, k,
                                    "nothing to undo", "info")
                    return show(item, annotator, k, "undone: your last judgment was removed", "info")
                except (StudioError, StoreError, ValueError) as e:
                    return fail(e)

            base = [name, overlap]
            start.click(start_fn, base, item_outputs, api_name="start")
            waiting.tick(poll_fn, base + [shown], item_outputs, api_visibility="private", show_progress="hidden",
                         queue=False)
            for button, choice in ((btn_a, "A"), (btn_b, "B"), (btn_tie, "tie"), (btn_bad, "both_bad"), (skip, "skip"),
                                   (submit, "enter")):
                button.click(judge_fn, base + [gr.State(choice), correction, shown], item_outputs,
                             api_name=f"judge_{choice}", show_progress="hidden", queue=False)
            correction.submit(judge_fn, base + [gr.State("enter"), correction, shown], item_outputs,
                              api_name="judge_enter_key", show_progress="hidden", queue=False)
            undo.click(undo_fn, base, item_outputs, api_name="undo", show_progress="hidden", queue=False)

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

            load.click(load_fn, [folder], [sources_note], api_name="load_dataset")
            add.click(add_fn, [uploads, upload_question], [sources_note], api_name="add_photos")

        # ------------------------------------------------------------------ Review
        with gr.Tab("Review", id="review") as review_tab:
            with gr.Row():
                who_filter = gr.Dropdown([""], value="", label="Annotator", allow_custom_value=True, scale=1)
                choice_filter = gr.Dropdown([""] + list(CHOICES), value="", label="Choice", scale=1)
                search = gr.Textbox(label="Search", placeholder="text in question, answers or correction", scale=2)
                refresh = gr.Button("Refresh", scale=0)
            with gr.Row(equal_height=False):
                kappa = gr.HTML("", elem_id="kappa")
                counts = gr.Dataframe(label="Judgments per annotator", interactive=False, max_height=220)
            table = gr.Dataframe(label="Judgments (newest first)", interactive=False, max_height=420,
                                 elem_id="judgments")
            disagreements = gr.Dataframe(label="Items where annotators disagree", interactive=False, max_height=300)

            def review_fn(annotator, choice, text):
                frame = studio.store.judgments_frame(annotator or None, choice or None, text or None)
                everything = studio.store.judgments_frame()
                agreement = studio.store.agreement()
                if everything.empty:
                    summary = views.banner("No judgments yet. They appear here as annotators work.", "info")
                elif agreement.method == "none":
                    summary = views.banner("No overlapped items yet: set k ≥ 2 on the Annotate tab to measure "
                                           "agreement.", "info")
                else:
                    name_ = "Cohen's kappa" if agreement.method == "cohen" else "Fleiss' kappa"
                    value = "undefined (everyone used one label)" if agreement.kappa is None else f"{agreement.kappa:.3f}"
                    summary = (f'<div class="kappa"><b>{name_}</b>: {value}<br>raw agreement '
                               f'{agreement.observed:.0%} on {agreement.items} overlapped items · annotators: '
                               f'{", ".join(map(views.esc, agreement.annotators))}</div>')
                import pandas as pd

                per = pd.DataFrame(columns=["annotator", "total"])
                if not everything.empty:
                    per = everything.pivot_table(index="annotator", columns="choice", values="id", aggfunc="count",
                                                 fill_value=0).reset_index()
                    per.columns.name = None
                    per["total"] = per.drop(columns="annotator").sum(axis=1)
                names = [""] + sorted(everything.annotator.unique()) if not everything.empty else [""]
                shown = frame.drop(columns=["image", "source_a", "source_b", "model_id"], errors="ignore")
                shown = shown.assign(question=shown.question.map(prompts.strip_image))[
                    ["id", "time", "annotator", "choice", "correction", "question", "candidate_a", "candidate_b", "item_id"]]
                disagree = studio.store.disagreements()
                disagree = disagree.assign(question=disagree.question.map(prompts.strip_image))
                return (summary, per, shown, disagree,
                        gr.update(choices=names, value=annotator or ""))

            outputs = [kappa, counts, table, disagreements, who_filter]
            refresh.click(review_fn, [who_filter, choice_filter, search], outputs, api_name="review")
            review_tab.select(review_fn, [who_filter, choice_filter, search], outputs)
            for box in (choice_filter, who_filter):
                box.input(review_fn, [who_filter, choice_filter, search], outputs)
            search.submit(review_fn, [who_filter, choice_filter, search], outputs)

        # ------------------------------------------------------------------ Export
        with gr.Tab("Export", id="export"):
            gr.Markdown(
                "### Export training data\nPreference pairs (seed format + TRL's vision preference format), SFT and "
                "self-correction conversations from corrected answers, an InternVL `meta.json` and the images, as "
                "one zip. Unzip it and pass the folder to `train/run_all.py --data`. Ties are left out, *both bad* "
                "with a correction gives correction-vs-each pairs, duplicates are merged, and overlapped items go "
                "by majority vote. Same as `python -m data_tools.export --db DATA --out DIR`.")
            export_button = gr.Button("Export zip", variant="primary", elem_id="btn-export")
            export_note = gr.HTML("", elem_id="export-note")
            export_file = gr.File(label="Download", elem_id="export-file")

            def export_fn():
                from data_tools.export import export
                from data_tools.validate import validate

                stamp = time.strftime("%Y%m%d-%H%M%S")
                folder = studio.runs / f"export-{stamp}"
                try:
                    summary = export(studio.store, folder)
                except StoreError as e:
                    return views.banner(views.esc(e), "error"), None
                files = [folder / "meta.json"] + ([folder / "preferences_trl.jsonl"] if summary.pairs else [])
                report = validate(files)
                import shutil

                archive = shutil.make_archive(str(studio.runs / f"occmllm-export-{stamp}"), "zip", folder)
                verdict = (views.banner("validated with data_tools.validate: ok", "ok") if not report.errors else
                           views.banner("validation problems:<br>" + "<br>".join(map(views.esc, report.errors[:10])),
                                        "error"))
                return views.banner(views.esc(summary.line().replace(str(folder), Path(archive).name)), "info") + verdict, archive

            export_button.click(export_fn, None, [export_note, export_file], api_name="export")

        runs_tab.build(config.runs_dir, explore_model=model)  # ------------------------------------ Runs
    return app


def _model_banner(studio: Studio) -> str:
    loaded = studio._models.get(studio.config.model)
    if loaded is not None and not loaded.trained:
        return views.banner("<b>The default model is untrained</b> (random weights): its answers mean nothing yet. "
                            "Train it with <code>train/run_all.py</code> or choose a checkpoint folder under "
                            "<i>Settings</i>.", "warn")
    if loaded is not None:
        return views.banner(f"Model: {views.esc(loaded.describe())}", "info")
    return ""


def serve(studio: Studio, host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False):
    """Launch the app; returns (app, local url). With block=False it serves in a background thread."""
    app = build_app(studio)
    app.queue(default_concurrency_limit=16)
    auth = list(studio.config.users.items()) if studio.config.users else None
    # served: the app's own files and the items' images; never the annotation database (blocked even where it lies
    # in an allowed or the current folder: blocked paths win)
    allowed = [str(studio.runs), str(EXAMPLES), *studio.image_folders()]
    database = studio.store.path.resolve()
    blocked = [str(database.with_name(database.name + suffix)) for suffix in ("", "-wal", "-shm", "-journal")]
    _, url, _ = app.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=not block, quiet=quiet, show_error=True,
                           allowed_paths=allowed, blocked_paths=blocked, head=views.SHORTCUT_JS, css=views.CSS,
                           theme=gr.themes.Soft(primary_hue="indigo"), footer_links=[],
                           auth_message="OCC-MLLM studio: sign in with the name and password you were given.")
    return app, url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="'default' (embedded model) or a local checkpoint folder")
    parser.add_argument("--expert", default="learned", help="3D expert: learned[:WEIGHTS] (a folder, or a shipped "
                        "expert: v4, the default, or v5), oracle:DATA_DIR[:SPLIT], folder:DIR or none (default: learned)")
    parser.add_argument("--data", default="data/studio", type=Path, help="data folder for the annotation database "
                        "and uploaded photos (default: data/studio)")
    parser.add_argument("--dataset", type=Path, help="dataset folder to annotate (seed JSONL files + images)")
    parser.add_argument("--overlap", type=int, default=1, help="annotators per item, k (default 1)")
    parser.add_argument("--candidates", choices=list(CANDIDATE_MODES), default="samples",
                        help="how new items get their two answers: " + "; ".join(f"{k}: {v}" for k, v in CANDIDATE_MODES.items()))
    parser.add_argument("--second-model", help="the second checkpoint for --candidates checkpoints")
    parser.add_argument("--users", type=Path, help="password login: a file of 'name:password' lines")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a team)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of training runs (train/run_all.py "
                        "--out DIR/NAME) that the Runs tab lists, read only (default: runs)")
    args = parser.parse_args(argv)
    try:
        users = read_users(args.users) if args.users else None
        if args.model != DEFAULT_MODEL:
            from occmllm.vlm import ModelLoadError, check_model_folder

            try:
                check_model_folder(Path(args.model))
            except ModelLoadError as e:
                raise StudioError(str(e)) from None
        studio = Studio(StudioConfig(args.data, args.model, args.expert, args.dataset, max(1, args.overlap),
                                     args.candidates, args.second_model, users, runs_dir=args.runs))
        print(f"loading model {args.model!r} ...", file=sys.stderr)
        studio.model(args.model)
    except StudioError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    serve(studio, args.host, args.port)


if __name__ == "__main__":
    main()
