"""Screenshots of every tab of the app, as a user sees them (headless Debian Chromium through Playwright), with the
shipped default model and the learned 3D expert.

    PYOPENGL_PLATFORM=osmesa python -m demo.screenshots --out docs            # docs/screenshot.png (Explore) + one per tab
    python -m demo.screenshots --out /tmp/shots --dataset data/synth --example bowl_occluded.jpg

Explore runs the CoT on a shipped example with "Force 3D" on, so that the 3D viewer shows the reconstructed mesh.
Annotate, Review and Export are filled by a few judgments of two annotators on a small synthetic dataset (generated
with data_tools.synth into a temporary folder unless --dataset names one). Runs compares two training runs of --runs
(default: two smoke runs made with train/run_all.py into a temporary folder, the second trained longer).
WebGL runs on SwiftShader (CPU).

    python -m demo.screenshots --out docs --only-runs --runs /tmp/runs --compare A B    # the Runs tab, on two runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

for _name, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                      ("HF_HUB_OFFLINE", "1")):
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# software WebGL, so that the Model3D canvas draws the mesh in a headless browser without a GPU
FLAGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--ignore-gpu-blocklist", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def make_runs(folder: Path) -> tuple[str, str]:
    """Two smoke runs to compare: the preset as it is ("before") and one trained longer ("after")."""
    for name, extra in (("smoke-before", []), ("smoke-after", ["stages.1.epochs=40", "stages.2.epochs=10",
                                                               "stages.4b.epochs=10", "stages.4c.epochs=20"])):
        if not (folder / name / "timing.json").is_file():
            subprocess.run([sys.executable, "train/run_all.py", "--preset", "smoke", "--out", str(folder / name),
                            *extra], check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return "smoke-before", "smoke-after"


def shoot(out: Path, dataset: Path | None, example: str, width: int = 1400, fuse: bool = False,
          expert: str = "learned", only_runs: bool = False, runs: Path | None = None,
          compare: tuple[str, str] | None = None, stage: str | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from demo.app import serve
    from demo.studio import Studio, StudioConfig

    work = Path(tempfile.mkdtemp(prefix="occmllm-shots-"))
    if dataset is None and not only_runs:
        dataset = work / "synth"
        subprocess.run([sys.executable, "-m", "data_tools.synth", "--out", str(dataset), "--n", "40", "--seed", "3",
                        "--workers", "1"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    if runs is None:
        runs = work / "runs"
        compare = make_runs(runs)
    studio = Studio(StudioConfig(work / "data", expert=expert, overlap=2, runs_dir=runs))
    if not only_runs:
        studio.model("default")
        studio.load_dataset(dataset)
    # a few judgments by two annotators, so that progress, the review table and agreement have something to show
    for name, choices in (("ana", "AABAtA"), ("ben", "ABBAAt")) if not only_runs else ():
        for choice in choices:
            item = studio.next_item(name, 2)
            studio.store.add_judgment(name, item, {"t": "tie"}.get(choice, choice))
    app, url = serve(studio, block=False, quiet=True)  # Gradio takes a free port from 7860 on
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": width, "height": 1000})  # (device_scale_factor=1 leaves the 3D canvas out)
            console = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text[:300]}"))
            page.goto(url)
            page.wait_for_selector("#run", timeout=60000)

            try:
                # Runs: run A and run B side by side, their curves and metrics drawn
                page.get_by_role("tab", name="Runs").click()
                page.wait_for_selector("#runs-table table", timeout=30000)
                if compare:
                    choose(page, "#run-choice", compare[0])
                    choose(page, "#compare-choice", compare[1])
                    page.wait_for_selector("#run-results table.compare", timeout=30000)
                if stage:
                    choose(page, "#curve-stage", stage)
                page.wait_for_selector("#run-curve canvas, #run-curve svg", timeout=30000)
                page.wait_for_timeout(2000)  # the plots draw
                page.mouse.move(5, 5)
                shots.append(_save(page, out / "screenshot-runs.png"))
                page.get_by_role("tab", name="Explore").click()
                if only_runs:
                    return shots
                # Explore: an example, Force 3D, Run; wait for the decision and the mesh in the viewer
                page.locator(f"img[src*='{example}']").first.click()
                page.wait_for_selector("#photo img", timeout=30000)
                page.get_by_role("button", name="Settings").click()
                page.get_by_label("Force 3D").check()
                if fuse:
                    page.get_by_label("Decide by photo and render together").check()
                page.click("#run")
                page.wait_for_selector("#final .final-answer", timeout=120000)
                page.locator("#viewer").scroll_into_view_if_needed()
                page.wait_for_selector("#viewer canvas", timeout=60000)
                page.wait_for_timeout(4000)  # the GLB loads and the canvas draws it
                page.get_by_role("button", name="Settings").click()  # fold the settings again
                page.mouse.move(5, 5)
                shots.append(_save(page, out / "screenshot.png"))

                # Annotate
                page.get_by_role("tab", name="Annotate").click()
                page.fill("#name input, #name textarea", "chris")
                page.click("#btn-start")
                page.wait_for_selector("#cand-a .cand-text", timeout=60000)
                page.wait_for_selector("#item-photo img", timeout=30000)
                page.locator("body").click(position={"x": 5, "y": 5})
                page.keyboard.press("1")
                page.wait_for_function("() => document.querySelector('#note').innerText.includes('saved')", timeout=30000)
                page.wait_for_timeout(500)
                shots.append(_save(page, out / "screenshot-annotate.png"))

                # Review
                page.get_by_role("tab", name="Review").click()
                page.get_by_role("button", name="Refresh").click()
                page.wait_for_function("() => document.querySelector('#judgments').innerText.includes('chris')", timeout=30000)
                page.wait_for_timeout(500)
                shots.append(_save(page, out / "screenshot-review.png"))

                # Export
                page.get_by_role("tab", name="Export").click()
                page.click("#btn-export")
                page.wait_for_function("() => document.querySelector('#export-note').innerText.includes('validated')",
                                       timeout=60000)
                page.wait_for_timeout(500)
                shots.append(_save(page, out / "screenshot-export.png"))
            except Exception:
                page.screenshot(path=str(out / "failed.png"), full_page=True)
                print(f"failed: the page as it was is in {out / 'failed.png'}; browser console:", *console[-20:],
                      sep="\n  ", file=sys.stderr)
                raise
            browser.close()
    finally:
        app.close()
    return shots


def choose(page, dropdown: str, option: str) -> None:
    """Pick `option` in the Gradio dropdown `dropdown` (a CSS selector of its elem_id) as a user does."""
    page.locator(f"{dropdown} input").click()
    page.locator(f"{dropdown} [role=option][aria-label='{option}']").click()
    page.wait_for_timeout(300)


def _save(page, path: Path) -> Path:
    """A full-page PNG, palette-quantized when that keeps it under 300 KB."""
    from PIL import Image

    page.screenshot(path=str(path), full_page=True)
    image = Image.open(path).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {image.width}x{image.height}, {path.stat().st_size // 1024} KB")
    return path


def main(argv: list[str] | None = None) -> None:
    from occmllm.shipped import LEARNED_HELP

    parser = argparse.ArgumentParser(prog="python -m demo.screenshots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs (default: docs)")
    parser.add_argument("--dataset", type=Path, help="dataset folder for Annotate (default: 40 synthetic samples)")
    parser.add_argument("--example", default="bottle_clear.jpg", help="the demo/examples photo run on Explore")
    parser.add_argument("--fuse", action="store_true", help="Explore decides by photo and render together")
    parser.add_argument("--expert", default=None, help=f"the 3D expert: {LEARNED_HELP} (default: as in the app, the "
                        "one the default model was trained with, else learned)")
    parser.add_argument("--only-runs", action="store_true", help="only the Runs tab (screenshot-runs.png)")
    parser.add_argument("--runs", type=Path, help="folder of training runs for the Runs tab (default: two smoke runs "
                        "made into a temporary folder)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="the two runs of --runs shown side by side")
    parser.add_argument("--stage", help="the stage whose curves the Runs tab shows (default: its first)")
    args = parser.parse_args(argv)
    if args.expert is None:
        from occmllm.expert_renders import expert_for_model

        args.expert = expert_for_model(None)[0]
    shoot(args.out, args.dataset, args.example, fuse=args.fuse, expert=args.expert, only_runs=args.only_runs, runs=args.runs,
          compare=tuple(args.compare) if args.compare else None, stage=args.stage)


if __name__ == "__main__":
    main()
