"""The Export tab: the annotators' judgments as one zip of training data, validated, that train/run_all.py reads.

    python -m demo                       # then the Export tab; the API endpoint is "/export"
    python -m data_tools.export --db DATA --out DIR      # the same export from the command line
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

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
            from occmllm.export import export
            from occmllm.validate import validate

            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = studio.runs / f"export-{stamp}"
            try:
                summary = export(studio.store, folder)
            except StoreError as e:
                return views.banner(views.esc(e), "error"), None
            files = [folder / "meta.json"] + ([folder / "preferences_trl.jsonl"] if summary.pairs else [])
            report = validate(files)
            archive = shutil.make_archive(str(studio.runs / f"occmllm-export-{stamp}"), "zip", folder)
            verdict = (views.banner("validated with data_tools.validate: ok", "ok") if not report.errors else
                       views.banner("validation problems:<br>" + "<br>".join(map(views.esc, report.errors[:10])),
                                    "error"))
            summary_line = summary.line().replace(str(folder), Path(archive).name)
            return views.banner(views.esc(summary_line), "info") + verdict, archive

        export_button.click(export_fn, None, [export_note, export_file], api_name="export")
    return tab
