"""The Explore tab: run the CoT on a photo and watch each step arrive, with the 3D reconstruction and the trace.

    python -m demo                       # then the Explore tab; the API endpoint is "/explore"

The photo, its settings (model, 3D expert, Force 3D, description step, fused decision, sampling) and a Run button on
the left; on the right the model banner, one card per finished step (demo/views.py), the final decision, the mesh in
a 3D viewer, the render the model re-read with the extra views, and the trace as JSON. Everything comes from
Studio.run (demo/studio.py), which streams the events of occmllm.pipeline.run_cot.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo import views
from demo.photo_input import PhotoInput
from demo.studio import DEFAULT_MODEL, EXPERT_CHOICES, FinishedRun, Studio, StudioError
from occmllm.images import ImageError
from occmllm.shipped import LEARNED_HELP

EXAMPLES = Path(__file__).resolve().parent / "examples"


def build(studio: Studio) -> gr.Dropdown:
    """The Explore tab inside the app's Blocks; returns its model dropdown (the Runs tab's "Open in Explore" sets it)."""
    config = studio.config
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
                                         info=f"{LEARNED_HELP}, oracle:DATA_DIR[:SPLIT], folder:DIR or none")
                    with gr.Row():
                        force_3d = gr.Checkbox(False, label="Force 3D")
                        describe = gr.Checkbox(False, label="Show description step")
                    fuse = gr.Checkbox(False, label="Decide by photo and render together",
                                       info="when a render is read (a 'No', or Force 3D): the class both readings "
                                            "support (the model's class probabilities on the photo and on the "
                                            "render, multiplied), not the render's answer alone. With Force 3D "
                                            "every photo is also read through its render")
                    sample = gr.Checkbox(False, label="Sample instead of greedy decoding")
                    with gr.Row():
                        temperature = gr.Slider(0.1, 2.0, 1.0, step=0.05, label="Temperature")
                        top_p = gr.Slider(0.1, 1.0, 1.0, step=0.05, label="Top-p")
            with gr.Column(scale=7):
                status = gr.HTML(model_banner(studio, studio.config.model), elem_id="status")
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
            outputs = dict(status=model_banner(studio, model_name), steps=views.steps_html([]), final="", mesh=None,
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
                        outputs["status"] = model_banner(studio, model_name)  # loaded now
                        note = event.expert_note
                        reconstruct = event.trace.step("reconstruct")
                        if (event.trace.render_missing or note) and (force or reconstruct is not None):
                            outputs["status"] += views.banner("3D route asked for but not available: " + (
                                note or (reconstruct.info.get("message") if reconstruct else None) or "no render"),
                                "warn")
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

        # The viewer gets the mesh once, after the run, from its own event: Gradio's Model3D never draws when the same
        # value arrives again while its 3D code is still loading (a streamed event sends its last value twice), so the
        # stream fills the hidden mesh_file and a follow-up event copies it over.
        run.click(lambda: None, None, viewer, queue=False, api_visibility="private")
        run.click(explore, [photo, model, expert, force_3d, describe, sample, temperature, top_p, fuse],
                  [status, steps, final, mesh_file, renders, trace_file], api_name="explore").then(
            lambda path: path, mesh_file, viewer, api_visibility="private", show_progress="hidden")
    return model


def model_banner(studio: Studio, name: str | None) -> str:
    """A warning when the model `name` is the untrained default, else which model answers ("" before it is loaded)."""
    loaded = studio.loaded_model(name)
    if loaded is not None and not loaded.trained:
        return views.banner("<b>The default model is untrained</b> (random weights): its answers mean nothing yet. "
                            "Train it with <code>train/run_all.py</code> or choose a checkpoint folder under "
                            "<i>Settings</i>.", "warn")
    if loaded is not None:
        return views.banner(f"Model: {views.esc(loaded.describe())}", "info")
    return ""
