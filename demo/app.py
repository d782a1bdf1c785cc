"""OCC-MLLM studio: see how the model reasons about a hand-held object, step by step and in 3D, and collect
preference labels that train it.

    python -m demo                                        # default model, http://127.0.0.1:7860
    python -m demo --dataset data/synth --overlap 2      # annotate a dataset folder, 2 annotators per item
    python -m demo --users users.txt --host 0.0.0.0      # password login for annotators (lines "name:password")
    python -m demo --model path/to/checkpoint --expert learned --data data/studio
    python -m demo --runs runs                           # the Runs tab lists the training runs in runs/

Tabs, one module each: Explore (run the CoT on a photo; demo/explore_tab.py), Annotate (A/B judgments with keyboard
shortcuts; demo/annotate_tab.py), Review (table, agreement, disagreements; demo/review_tab.py), Export (zip of
preference pairs + SFT conversations, accepted by train/run_all.py --data; demo/export_tab.py), Runs (what training
did: results, curves, two runs compared; demo/runs_tab.py). What they do without the UI is in demo/studio.py, the
HTML they show in demo/views.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _name, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_name, _value)

import gradio as gr  # noqa: E402

from demo import annotate_tab, explore_tab, export_tab, review_tab, runs_tab, views  # noqa: E402
from demo.explore_tab import EXAMPLES  # noqa: E402
from demo.studio import CANDIDATE_MODES, DEFAULT_MODEL, Studio, StudioConfig, StudioError, read_users  # noqa: E402


def build_app(studio: Studio) -> gr.Blocks:
    """The app's page: the title and the five tabs, one module each (the login is serve's)."""
    with gr.Blocks(title="OCC-MLLM studio") as app:
        gr.Markdown("# OCC-MLLM studio\nHow a vision-language model identifies an object held in a hand: it answers, "
                    "asks itself whether the object is clearly visible, and if not, reconstructs it in 3D and looks "
                    "again.", elem_id="title")
        explore_model = explore_tab.build(studio)
        annotate_tab.build(studio, app)
        review_tab.build(studio)
        export_tab.build(studio)
        runs_tab.build(studio.config.runs_dir, explore_model=explore_model,
                       models=(DEFAULT_MODEL, studio.config.model))
    return app


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
    from occmllm.shipped import LEARNED_HELP

    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="'default' (embedded model) or a local checkpoint folder")
    parser.add_argument("--expert", default=None, help=f"3D expert: {LEARNED_HELP}, oracle:DATA_DIR[:SPLIT], "
                        "folder:DIR or none (default: the one the model was trained with, recorded in its folder by "
                        "train/run_all.py, else learned)")
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
    if args.expert is None:
        from occmllm.expert_renders import expert_for_model

        args.expert, note = expert_for_model(args.model)
        if note:
            print(f"3D expert: {args.expert} ({note})", file=sys.stderr)
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
