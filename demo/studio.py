"""What the app does, without the UI: models and 3D experts (loaded once, with readable errors), the CoT run as a
stream of events, annotation candidates, the store. demo/app.py and its tabs (demo/*_tab.py) wire these to Gradio
components."""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
import weakref
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from occmllm import prompts
from occmllm.default_model import DEFAULT_MODEL
from occmllm.images import ImageError, load_image
from occmllm.shipped import EXPERT_CHOICES  # noqa: F401  (the app's 3D-expert menu)
from occmllm.store import Item, Store, StoreError

if TYPE_CHECKING:
    from occmllm.pipeline import Step, Trace

LOOKAHEAD = 32  # ready items (still wanting judgments) that the background preparer keeps ahead of the annotators
BATCH = 8  # items given answers at once (one batched sampling call)


CANDIDATE_MODES = {
    "samples": "two distinct samples of the model",
    "3d": "the answer before and after the 3D route",
    "checkpoints": "the model vs a second checkpoint",
}


def model_name(name: str | None) -> str:
    """A model box's value as the studio keys its models: "default" for an empty box."""
    return (name or DEFAULT_MODEL).strip() or DEFAULT_MODEL


class StudioError(RuntimeError):
    """Something the user can fix (bad folder, missing model, ...); shown in the page as it is."""


@dataclass
class Preparing:
    """No item with answers is ready for this annotator yet, but some are being generated in the background."""

    waiting: int  # items still without answers


@dataclass
class FinishedRun:
    """The last event of `Studio.run`, after the pipeline's steps: the Trace, the trace.json it was saved to, and why
    the chosen 3D expert is unavailable ("" when it is there)."""

    trace: Trace
    trace_path: str
    expert_note: str = ""


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
    runs_dir: Path = Path("runs")  # training runs the Runs tab lists (train/run_all.py --out runs/NAME)


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
        self._wake = threading.Event()  # new items, or an annotator waiting: the preparer looks again
        self._preparer: threading.Thread | None = None
        self.preparer_error: str | None = None
        if config.dataset is not None:
            self.load_dataset(config.dataset)

    # --- models and experts ----------------------------------------------------------------------
    def model(self, name: str | None):
        """A loaded VLM by name ("default" or a local checkpoint folder); StudioError with the reason otherwise."""
        from occmllm.vlm import VLM, ModelLoadError

        name = model_name(name)
        with self._lock:
            if name not in self._models:
                import warnings

                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self._models[name] = VLM.load_named(name)
                except (ModelLoadError, OSError, ValueError) as e:
                    raise StudioError(f"model {name!r} cannot be loaded: {e}") from None
            return self._models[name]

    def loaded_model(self, name: str | None):
        """The VLM `name` names when it is loaded already, else None (never loads one)."""
        return self._models.get(model_name(name))

    def expert(self, spec: str | None):
        """(expert or None, message): a 3D expert by spec, or None with the reason it is unavailable."""
        from occmllm.recon import expert_from_spec

        spec = (spec or "none").strip()
        if spec == "none":
            return None, "3D expert switched off"
        if spec not in self._experts:
            try:
                self._experts[spec] = _WithViews(expert_from_spec(spec))
            except Exception as e:  # noqa: BLE001 - any failure to build an expert is shown, not raised
                self._experts[spec] = e
        found = self._experts[spec]
        if isinstance(found, Exception):
            return None, f"3D expert {spec!r} unavailable: {found}"
        return (found if isinstance(found, _WithViews) else _WithViews(found)), ""

    # --- explore ---------------------------------------------------------------------------------
    def run(self, image, model: str, expert: str, force_3d: bool, describe: bool, sample: bool, temperature: float,
            top_p: float, fuse: bool = False) -> Iterator[Step | FinishedRun]:
        """Yield the pipeline's Step events for one photo, then a FinishedRun (its Trace, saved as trace.json);
        raises StudioError / ImageError first."""
        from occmllm.pipeline import Sampling, Trace, run_cot

        if image is None:
            raise StudioError("no photo yet: upload one, paste one, take one with the webcam or pick an example")
        photo = load_image(image)  # ImageError -> shown in the page
        vlm = self.model(model)
        chosen, note = self.expert(expert)
        out_dir = self.runs / uuid.uuid4().hex[:12]
        sampling = Sampling(temperature, top_p) if sample else None
        events = run_cot(vlm, image if isinstance(image, (str, os.PathLike)) else photo, expert=chosen,
                         describe=describe, force_3d=force_3d, sampling=sampling, out_dir=out_dir, fuse=fuse,
                         probabilities=True)
        while True:
            # The lock is held while a step computes, not while the page shows it: users running the CoT at once
            # take turns step by step, instead of each waiting for the others' whole runs to be streamed out.
            with self._lock:
                event = next(events, None)
            if event is None:
                return
            if isinstance(event, Trace):
                path = out_dir / "trace.json"
                out_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(event.to_json())
                yield FinishedRun(event, str(path), note)
            else:
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
        if ready < len(items):
            self.prefill()
        return f"{len(items)} items from {folder} ({new} new, {ready} with candidates from the file)"

    def image_folders(self) -> list[str]:
        """The folders of the items' images (what the app may serve), uploads included."""
        folders = {str(Path(folder).resolve()) for folder in {os.path.dirname(p) for p in self.store.image_paths()}}
        return sorted(folders | {str(self.store.images.resolve())})

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

    def next_item(self, annotator: str, overlap: int) -> Item | Preparing | None:
        """The annotator's next item with its two answers (never generated here: the judgment path only reads),
        Preparing when their next items are still being given answers in the background, None when nothing is
        left for them."""
        item = self.store.next_item(annotator, overlap, ready=True)
        if item is not None:
            self.prefill()  # keep the buffer of ready items full
            return item
        if self.store.next_item(annotator, overlap, claim=False) is None:
            return None
        self.prefill()
        return Preparing(len(self.store.unready_items(10_000)))

    def prepare(self, item: Item) -> Item:
        """Give an item its two answers (see prepare_batch); returns the item as stored."""
        return self.prepare_batch([item])[0]

    def prepare_batch(self, items: list[Item]) -> list[Item]:
        """Give items their two answers (per config.candidates), readable ones only, and store each item's once (an
        item that got answers meanwhile keeps those). An item that cannot get two readable answers is marked with
        the problem and never shown. Samples are drawn for all items with one question in one batch. Returns the
        items as stored."""
        mode = self.config.candidates
        vlm = self.model(self.config.model)
        images = [load_image(item.image) for item in items]
        answers: list[list[tuple[str, str]]] = []
        with self._lock:
            for item, image in zip(items, images):
                if mode == "3d":
                    from occmllm.pipeline import run_cot

                    expert, note = self.expert(self.config.expert)
                    if expert is None:
                        raise StudioError(f"candidates 'before/after 3D' need a 3D expert: {note}")
                    trace = list(run_cot(vlm, image, expert=expert, force_3d=True))[-1]
                    before, after = trace.step("identify"), trace.step("identify_3d")
                    answers.append([(before.raw, "cot:identify"), (after.raw if after else "", "cot:identify_3d")])
                elif mode == "checkpoints":
                    other = self.config.second_model
                    if not other:
                        raise StudioError("candidates 'two checkpoints' need --second-model")
                    vlm.forget()
                    first = vlm.chat(image, item.question)
                    with _unlocked(self._lock):
                        second = self.model(other)
                    answers.append([(first, f"model:{vlm.name}"), (second.chat(image, item.question), f"model:{other}")])
            if mode not in ("3d", "checkpoints"):
                by_item: dict[str, list[tuple[str, str]]] = {}
                for question in dict.fromkeys(item.question for item in items):
                    group = [(item, image) for item, image in zip(items, images) if item.question == question]
                    found = _two_samples(vlm, [image for _, image in group], question)
                    by_item.update((item.id, pair) for (item, _), pair in zip(group, found))
                answers = [by_item[item.id] for item in items]
        stored = []
        for item, pair in zip(items, answers):
            unreadable = [text for text, _ in pair if not prompts.readable_answer(item.question, text)]
            if unreadable or len(pair) < 2:
                self.store.set_problem(item, f"no two readable answers (got {unreadable or pair!r})")
                stored.append(self.store.item(item.id))
                continue
            (a, source_a), (b, source_b) = pair[:2]
            stored.append(self.store.set_candidates(item, a, b, source_a, source_b, vlm.name))
        return stored

    def prefill(self) -> None:
        """Wake the background preparer (started on first use): it gives the next items in the queue their answers
        until LOOKAHEAD ready items wait for judgments, then sleeps until woken."""
        if self._preparer is None or not self._preparer.is_alive():
            self._preparer = threading.Thread(target=self._prepare_ahead, name="candidates", daemon=True)
            self._preparer.start()
            _PREFILLING.add(self._preparer)
        self._wake.set()

    def _prepare_ahead(self) -> None:
        try:  # below the request threads: a judgment never waits behind generation for the CPU (Linux: per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while not _EXITING.is_set():
            self._wake.clear()
            todo = [] if self.store.count_open_ready(self.config.overlap) >= LOOKAHEAD else \
                self.store.unready_items(BATCH)
            if not todo:
                self._wake.wait(timeout=2.0)
                continue
            try:
                self.prepare_batch(todo)
                self.preparer_error = None
            except StudioError as e:  # a model that cannot load: say so in the page, try again later
                self.preparer_error = str(e)
                self._wake.wait(timeout=5.0)
            except Exception:  # noqa: BLE001 - one bad item (an unreadable photo) must not stop the others
                for item in todo:
                    if _EXITING.is_set():
                        return
                    try:
                        self.prepare(item)
                    except StudioError as e:
                        self.preparer_error = str(e)
                    except Exception as e:  # noqa: BLE001 - marked, never shown, listed with its reason
                        self.store.set_problem(item, f"{type(e).__name__}: {e}")


def _two_samples(vlm, images: list, question: str) -> list[list[tuple[str, str]]]:
    """For each image, two readable answers of the model to `question` that mean different things, with their
    sources: its likeliest readable sample and the likeliest one that differs; a model too sure of one answer to
    sample another gets the other yes/no answer, or its second most probable class, as answer B."""
    meaning = prompts.parse_object if _is_class_question(question) else prompts.parse_yes_no
    found: list[list[tuple[str, str]]] = [[] for _ in images]
    for temperature in (1.0, 1.5):
        todo = [i for i, pair in enumerate(found) if len(pair) < 2]
        if not todo:
            break
        samples = vlm.sample_batch([images[i] for i in todo], question, n=4, temperature=temperature,
                                   top_p=0.95 if temperature > 1 else 1.0, max_rounds=2)
        for i, candidates in zip(todo, samples):
            for c in candidates:
                if prompts.readable_answer(question, c.text) and meaning(c.text) not in {meaning(t) for t, _ in found[i]}:
                    found[i].append((c.text, f"sample:{len(found[i])}" + (f" (temperature {temperature:g})"
                                                                          if temperature != 1 else "")))
    todo = [i for i, pair in enumerate(found) if len(pair) < 2]
    if todo and _is_class_question(question):
        for i, probs in zip(todo, vlm.class_posterior([images[i] for i in todo])):
            for rank in probs.argsort()[::-1]:
                cls = prompts.CLASSES[rank]
                if len(found[i]) < 2 and cls not in {meaning(t) for t, _ in found[i]}:
                    found[i].append((prompts.identify_answer(cls), f"class posterior ({probs[rank]:.2f})"))
    for i in todo if not _is_class_question(question) else []:
        taken = {meaning(t) for t, _ in found[i]}
        for value, text in ((prompts.YES, "Yes."), (prompts.NO, "No.")):
            if len(found[i]) < 2 and value not in taken:
                found[i].append((text, "the other answer"))
    return [pair[:2] for pair in found]


def _is_class_question(question: str) -> bool:
    q = prompts.strip_image(question)
    return q.startswith(prompts.IDENTIFY_TEXT) or q.startswith(prompts.CHECK_AGAIN_TEXT)


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
