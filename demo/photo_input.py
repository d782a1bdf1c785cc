"""The photo box of the Explore and Annotate tabs: a gr.Image that lets occmllm.images say what is wrong with a file."""

from __future__ import annotations

import gradio as gr


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
