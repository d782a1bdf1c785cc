"""The app under test: a Studio on a temporary data folder, the embedded default model (shipped weights), a tiny
in-code 3D expert (a box mesh in front of the camera), served on a free port in this process."""

import contextlib
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occmllm import formats, prompts

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's, installed by the Makefile
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium_page(url: str, wait_for: str | None = "#run", **page_options):
    """A headless Chromium page on `url` (1400x1000), once `wait_for` is on it; the test is skipped where playwright
    or Debian's chromium is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, **page_options)
        page.goto(url)
        if wait_for:
            page.wait_for_selector(wait_for, timeout=30000)
        try:
            yield page
        finally:
            browser.close()


class BoxExpert:
    """A 3D expert built in code: always reconstructs the same box, rendered through occmllm.recon's own path."""

    K = np.array([[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]], np.float32)

    def reconstruct(self, image, K=None, views=False):
        import trimesh

        from occmllm.recon.experts import finish

        t0 = time.perf_counter()
        mesh = trimesh.creation.box(extents=(0.08, 0.16, 0.06))
        mesh.apply_translation((0.0, 0.0, 0.5))
        return finish(mesh, self.K, 256, views, {}, t0, "reconstructed (test box)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_dataset(folder: Path, n: int = 6) -> Path:
    """A synth-style folder: meta.json + test_dpo.jsonl (clarity pairs) + test_Q1.jsonl, images under test/images."""
    images = folder / "test" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i:08d}.jpg")
    pairs = [formats.clarity_pair(f"{i:08d}.jpg", i % 2 == 0) for i in range(n)]
    formats.write_jsonl(folder / "test_dpo.jsonl", pairs)
    formats.write_meta(folder / "meta.json", {"test_dpo": formats.MetaEntry("test/images", "test_dpo.jsonl", False, 1, n)})
    return folder


def make_q1_dataset(folder: Path, n: int = 6) -> Path:
    """A folder of Q1 conversations (question and the dataset's answer, no candidates: the app samples them)."""
    images = folder / "test" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    records = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"{i:08d}.jpg")
        cls = prompts.CLASSES[i % len(prompts.CLASSES)]
        records.append(formats.Conversation(f"{i:08d}", f"{i:08d}.jpg", [
            {"from": "human", "value": prompts.with_image(prompts.IDENTIFY_TEXT)},
            {"from": "gpt", "value": prompts.identify_answer(cls)}]))
    formats.write_jsonl(folder / "test_Q1.jsonl", records)
    formats.write_meta(folder / "meta.json", {"test_Q1": formats.MetaEntry("test/images", "test_Q1.jsonl", False, 1, n)})
    return folder


def start_app(root: Path):
    from demo.app import serve
    from demo.studio import Studio, StudioConfig

    dataset = make_dataset(root / "dataset")
    studio = Studio(StudioConfig(root / "data", expert="box", dataset=dataset, overlap=2,
                                 experts={"box": BoxExpert()}))
    studio.model("default")
    app, url = serve(studio, port=free_port(), block=False, quiet=True)
    return app, studio, url.rstrip("/")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(studio, url) of one app (its own data folder) per test module."""
    app, studio, url = start_app(tmp_path_factory.mktemp("studio"))
    yield studio, url
    app.close()


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(path)
    return str(path)
