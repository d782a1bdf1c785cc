"""The Export tab: the annotators' judgments as one zip of training data, validated, that train/run_all.py reads.

    python -m demo                       # then the Export tab; the API endpoint is "/export"
    python -m data_tools.export --db DATA --out DIR      # the same export from the command line
"""

from __future__ import annotations

import time
import uuid

import gradio as gr

from demo import views
from demo.studio import Studio
from occmllm.store import StoreError


def build(studio: Studio) -> gr.Tab:
    """The Export tab inside the app's Blocks: a button, the export's summary and validation, the zip to download."""
    with gr.Tab("Export", id="export") as tab:
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
            from occmllm.export import export_zip

            archive = studio.runs / f"occmllm-export-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.zip"
            try:
                summary = export_zip(studio.store, archive, check=True)
            except StoreError as e:
                return views.banner(views.esc(e), "error"), None
            verdict = (views.banner("validated (the checks of python -m data_tools.validate): ok", "ok")
                       if not summary.problems else
                       views.banner("validation problems:<br>" + "<br>".join(map(views.esc, summary.problems[:10])),
                                    "error"))
            summary_line = summary.line().replace(str(archive), archive.name)
            return views.banner(views.esc(summary_line), "info") + verdict, str(archive)

        export_button.click(export_fn, None, [export_note, export_file], api_name="export")
    return tab
