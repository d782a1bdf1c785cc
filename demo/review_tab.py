"""The Review tab: every judgment in a table, judgments per annotator, agreement, and the items annotators disagree on.

    python -m demo                       # then the Review tab; the API endpoint is "/review"

Filters by annotator, choice and text; the agreement is Cohen's kappa for two annotators and Fleiss' kappa for more,
over the items that more than one annotator judged (occmllm.store.Store.agreement).
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from demo import views
from demo.studio import Studio
from occmllm import prompts
from occmllm.store import CHOICES, filter_judgments
from occmllm.store import agreement as agreement_of


def build(studio: Studio) -> gr.Tab:
    """The Review tab inside the app's Blocks; it refreshes when it is selected."""
    with gr.Tab("Review", id="review") as tab:
        with gr.Row():
            who_filter = gr.Dropdown([""], value="", label="Annotator", allow_custom_value=True, scale=1)
            choice_filter = gr.Dropdown([""] + list(CHOICES), value="", label="Choice", scale=1)
            search = gr.Textbox(label="Search", placeholder="text in question, answers or correction", scale=2)
            refresh = gr.Button("Refresh", scale=0)
        with gr.Row(equal_height=False):
            kappa = gr.HTML("", elem_id="kappa")
            counts = gr.Dataframe(label="Judgments per annotator", interactive=False, max_height=220)
        table = gr.Dataframe(label="Judgments (newest first)", interactive=False, max_height=420, elem_id="judgments")
        disagreements = gr.Dataframe(label="Items where annotators disagree", interactive=False, max_height=300)

        def review_fn(annotator, choice, text):
            everything = studio.store.judgments_frame()
            frame = filter_judgments(everything, annotator or None, choice or None, text or None)
            ratings = studio.store.ratings()
            agreement = agreement_of(ratings)
            if everything.empty:
                summary = views.banner("No judgments yet. They appear here as annotators work.", "info")
            elif agreement.method == "none":
                summary = views.banner("No overlapped items yet: set k ≥ 2 on the Annotate tab to measure "
                                       "agreement.", "info")
            else:
                name = "Cohen's kappa" if agreement.method == "cohen" else "Fleiss' kappa"
                value = "undefined (everyone used one label)" if agreement.kappa is None else f"{agreement.kappa:.3f}"
                summary = (f'<div class="kappa"><b>{name}</b>: {value}<br>raw agreement '
                           f'{agreement.observed:.0%} on {agreement.items} overlapped items · annotators: '
                           f'{", ".join(map(views.esc, agreement.annotators))}</div>')
            per_annotator = pd.DataFrame(columns=["annotator", "total"])
            if not everything.empty:
                per_annotator = everything.pivot_table(index="annotator", columns="choice", values="id",
                                                       aggfunc="count", fill_value=0).reset_index()
                per_annotator.columns.name = None
                per_annotator["total"] = per_annotator.drop(columns="annotator").sum(axis=1)
            names = [""] + sorted(everything.annotator.unique()) if not everything.empty else [""]
            shown = frame.drop(columns=["image", "source_a", "source_b", "model_id"], errors="ignore")
            shown = shown.assign(question=shown.question.map(prompts.strip_image))[
                ["id", "time", "annotator", "choice", "correction", "question", "candidate_a", "candidate_b", "item_id"]]
            disagree = studio.store.disagreements(ratings)
            disagree = disagree.assign(question=disagree.question.map(prompts.strip_image))
            return summary, per_annotator, shown, disagree, gr.update(choices=names, value=annotator or "")

        filters = [who_filter, choice_filter, search]
        outputs = [kappa, counts, table, disagreements, who_filter]
        view = "review-view"  # every listener that redraws the view: answered in the order asked (views.in_order)
        refresh.click(review_fn, filters, outputs, api_name="review", **views.in_order(view))
        tab.select(review_fn, filters, outputs, **views.in_order(view))
        for box in (choice_filter, who_filter):
            box.input(review_fn, filters, outputs, **views.follows_last(view))
        search.submit(review_fn, filters, outputs, **views.follows_last(view))
    return tab
