"""What the app does, without the UI: models and 3D experts (loaded once, with readable errors), the CoT run as a
stream of events, annotation candidates, the store. demo/app.py wires these to Gradio components."""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
import weakref
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from occmllm import prompts
from occmllm.images import ImageError, load_image
from occmllm.store import Item, Store, StoreError

DEFAULT_MODEL = "default"
EXPERT_CHOICES = ("learned", "learned:v5", "none")  # learned = the v4 expert (occmllm.recon.experts.SHIPPED)
CANDIDATE_MODES = {
    "samples": "two distinct samples of the model",
    "3d": "the answer before and after the 3D route",
    "checkpoints": "the model vs a second checkpoint",
}


class StudioError(RuntimeError):
    """Something the user can fix (bad folder, missing model, ...); shown in the page as it is."""


@dataclass
class StudioConfig:
    data_dir: Path
    model: str = DEFAULT_MODEL
    expert: str = "learned"
    dataset: Path | None = None
    overlap: int = 1
    candidates: str = "samples"
    second_model: str | None = None
    users: dict[str, str] | None = None
    experts: dict[str, object] = field(default_factory=dict)  # extra named experts (tests, plug-ins)


class Studio:
    def __init__(self, config: StudioConfig):
        self.config = config
        try:
            self.store = Store(config.data_dir)
        except StoreError as e:
            raise StudioError(str(e)) from None
        self.runs = Path(tempfile.gettempdir()) / "occmllm-studio-runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self._models: dict[str, object] = {}
        self._experts: dict[str, object] = dict(config.experts)
        self._lock = threading.Lock()  # model loading and generation: one at a time on a small CPU
        self._prefill: threading.Thread | None = None
        if config.dataset is not None:
            self.load_dataset(config.dataset)

    # --- models and experts ----------------------------------------------------------------------
    def model(self, name: str | None):
        """A loaded VLM by name ("default" or a local checkpoint folder); StudioError with the reason otherwise."""
        from occmllm.vlm import VLM, ModelLoadError

        name = (name or DEFAULT_MODEL).strip() or DEFAULT_MODEL
        with self._lock:
            if name not in self._models:
                import warnings

                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self._models[name] = VLM.load_default() if name == DEFAULT_MODEL else VLM.load(name)
                except (ModelLoadError, OSError, ValueError) as e:
                    raise StudioError(f"model {name!r} cannot be loaded: {e}") from None
            return self._models[name]

    def expert(self, spec: str | None):
        """(expert or None, message): a 3D expert by spec, or None with the reason it is unavailable."""
        from occmllm.pipeline import make_expert

        spec = (spec or "none").strip()
        if spec == "none":
            return None, "3D expert switched off"
        if spec not in self._experts:
            try:
                self._experts[spec] = _WithViews(make_expert(spec))
            except Exception as e:  # noqa: BLE001 - any failure to build an expert is shown, not raised
                self._experts[spec] = e
        found = self._experts[spec]
        if isinstance(found, Exception):
            return None, f"3D expert {spec!r} unavailable: {found}"
        return (found if hasattr(found, "inner") else _WithViews(found)), ""

    # --- explore ---------------------------------------------------------------------------------
    def run(self, image, model: str, expert: str, force_3d: bool, describe: bool, sample: bool, temperature: float,
            top_p: float, fuse: bool = False):
        """Yield the pipeline's events (Step ..., Trace) for one photo; raises StudioError / ImageError first."""
        from occmllm.pipeline import Sampling, run_cot

        if image is None:
            raise StudioError("no photo yet: upload one, paste one, take one with the webcam or pick an example")
        photo = load_image(image)  # ImageError -> shown in the page
        vlm = self.model(model)
        chosen, note = self.expert(expert)
        out_dir = self.runs / uuid.uuid4().hex[:12]
        sampling = Sampling(temperature, top_p) if sample else None
        with self._lock:
            for event in run_cot(vlm, image if isinstance(image, (str, os.PathLike)) else photo, expert=chosen,
                                 describe=describe, force_3d=force_3d, sampling=sampling, out_dir=out_dir,
                                 fuse=fuse):
                if hasattr(event, "steps"):
                    event.expert_note = note
                    path = out_dir / "trace.json"
                    out_dir.mkdir(parents=True, exist_ok=True)
                    path.write_text(event.to_json())
                    event.trace_path = str(path)
                elif getattr(event, "reconstruction", None) is not None and event.reconstruction.views is not None:
                    from PIL import Image

                    out_dir.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(event.reconstruction.views).save(out_dir / "views.png")
                    event.files["views"] = str(out_dir / "views.png")
                yield event

    # --- annotation ------------------------------------------------------------------------------
    def load_dataset(self, folder: str | os.PathLike, split: str | None = None) -> str:
        from occmllm.store import items_from_dataset

        try:
            items = items_from_dataset(folder, split=split)
        except StoreError as e:
            raise StudioError(str(e)) from None
        new = self.store.add_items(items)
        ready = sum(i.ready for i in items)
        return f"{len(items)} items from {folder} ({new} new, {ready} with candidates from the file)"

    def add_photos(self, paths: list[str], question: str = prompts.Q1) -> str:
        good, bad = [], []
        for path in paths or []:
            try:
                load_image(path)
                good.append(path)
            except ImageError as e:
                bad.append(f"{Path(path).name}: {e}")
        items = self.store.add_photos(good, question) if good else []
        message = f"added {len(items)} photo(s)"
        if bad:
            message += "; refused " + "; ".join(bad)
        self.prefill()
        return message

    def next_item(self, annotator: str, overlap: int) -> Item | None:
        item = self.store.next_item(annotator, overlap)
        if item is not None and not item.ready:
            item = self.prepare(item)
        self.prefill()
        return item

    def prepare(self, item: Item) -> Item:
        """Give an item its two candidates (per config.candidates), store them, return the updated item."""
        mode = self.config.candidates
        vlm = self.model(self.config.model)
        image = load_image(item.image)
        with self._lock:
            if mode == "3d":
                from occmllm.pipeline import run_cot

                expert, note = self.expert(self.config.expert)
                if expert is None:
                    raise StudioError(f"candidates 'before/after 3D' need a 3D expert: {note}")
                trace = list(run_cot(vlm, image, expert=expert, force_3d=True))[-1]
                before, after = trace.step("identify"), trace.step("identify_3d")
                a, b = before.raw, after.raw if after else ""
                sources = ("cot:identify", "cot:identify_3d")
            elif mode == "checkpoints":
                other = self.config.second_model
                if not other:
                    raise StudioError("candidates 'two checkpoints' need --second-model")
                vlm.forget()
                a = vlm.chat(image, item.question)
                with _unlocked(self._lock):
                    second = self.model(other)
                b = second.chat(image, item.question)
                sources = (f"model:{vlm.name}", f"model:{other}")
            else:
                found = vlm.sample(image, item.question, n=2, temperature=1.0)
                sources = ["sample:0", "sample:1"]
                for temperature in (1.5, 2.0):  # a model sure of its answer: look further from it for a second one
                    if len(found) >= 2:
                        break
                    seen = {c.text for c in found}
                    hotter = [c for c in vlm.sample(image, item.question, n=4, temperature=temperature, top_p=0.95)
                              if c.text not in seen]
                    hotter.sort(key=lambda c: not _readable(c.text))  # a well-formed answer first, if there is one
                    found += hotter[:1]
                    sources[1] = f"sample:1 (temperature {temperature:g})"
                texts = [c.text for c in found]
                if len(texts) < 2:
                    vlm.forget()
                    texts.append(vlm.chat(image, item.question))
                    sources[1] = "greedy"
                a, b = texts[0], texts[1]
        return self.store.set_candidates(item, a, b, sources[0], sources[1], vlm.name)

    def prefill(self, limit: int = 4) -> None:
        """Generate candidates for the next few unready items in the background (one thread at a time)."""
        if self._prefill is not None and self._prefill.is_alive():
            return

        def work():
            for item in self.store.unready_items(limit):
                if _EXITING.is_set():
                    return
                try:
                    self.prepare(item)
                except Exception:  # noqa: BLE001 - shown when the item is served instead
                    return

        if self.store.unready_items(1):  # one indexed query: this runs on every "next item"
            self._prefill = threading.Thread(target=work, daemon=True)
            self._prefill.start()
            _PREFILLING.add(self._prefill)


def _readable(text: str) -> bool:
    """A sampled answer an annotator can judge: it names a known class (or says yes / no) and has no broken bytes."""
    known = prompts.parse_object(text) != prompts.UNPARSED or prompts.parse_yes_no(text) != prompts.UNPARSED
    return known and text.isprintable() and "\ufffd" not in text


# Background candidate generation still inside torch when the interpreter exits aborts the process ("terminate called
# without an active exception", exit 134): at exit, let the running item finish and start no other.
_EXITING = threading.Event()
_PREFILLING: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


@atexit.register
def _finish_prefills() -> None:
    _EXITING.set()
    for thread in list(_PREFILLING):
        thread.join(timeout=60)


class _WithViews:
    """An expert whose reconstructions also carry the extra views (the pipeline calls reconstruct(image))."""

    def __init__(self, inner):
        self.inner = inner

    def reconstruct(self, image):
        try:
            return self.inner.reconstruct(image, views=True)
        except TypeError:
            return self.inner.reconstruct(image)


class _unlocked:
    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        self.lock.release()

    def __exit__(self, *exc):
        self.lock.acquire()


def read_users(path: str | os.PathLike) -> dict[str, str]:
    """`name:password` per line (blank lines and # comments ignored); StudioError with file:line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"--users {path}: no such file")
    users = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name.strip() or not password:
            raise StudioError(f"{path}:{number}: expected 'name:password'")
        users[name.strip()] = password
    if not users:
        raise StudioError(f"{path}: no users (expected lines 'name:password')")
    return users


def now() -> float:
    return time.perf_counter()
