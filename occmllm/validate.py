"""Check data files against the seed's formats and report every problem as ``file:line: what is wrong``.

    python -m data_tools.validate data/synth/train_Q1.jsonl data/synth/meta.json
    python -m data_tools.validate export/pairs.jsonl --images-root export/images
    python -m data_tools.validate preds.json --format predictions

The format is recognised from the content (SFT conversations, preference pairs, TRL conversations or preference
records, an InternVL meta file, a predictions file) unless ``--format`` names it. A meta file's annotation files are
checked too, with the meta's ``root`` as their image folder; a JSONL named in a ``meta.json`` beside it takes that
root as well. Exit code 1 when anything is wrong, 0 otherwise (warnings such as a byte-order mark do not count).
Images are only checked for existence (one directory listing per folder), never opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from occmllm import formats, prompts

FORMATS = ("conversations", "preferences", "trl-conversations", "trl-preferences", "meta", "predictions")


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)

    def error(self, path: Path | str, line: int | None, message: str) -> None:
        self.errors.append(f"{path}:{line}: {message}" if line else f"{path}: {message}")

    def warn(self, path: Path | str, line: int | None, message: str) -> None:
        self.warnings.append(f"{path}:{line}: warning: {message}" if line else f"{path}: warning: {message}")


class ImageIndex:
    """Answers "does this image exist under root?" from one cached directory listing per folder."""

    def __init__(self) -> None:
        self._listing: dict[Path, set[str]] = {}

    def exists(self, root: Path, name: str) -> bool:
        path = root / name
        folder = path.parent
        if folder not in self._listing:
            try:
                self._listing[folder] = set(os.listdir(folder))
            except OSError:
                self._listing[folder] = set()
        return path.name in self._listing[folder]


def detect_format(path: Path, first: Any) -> str | None:
    if path.suffix == ".json" or not isinstance(first, dict):
        if isinstance(first, dict) and first and all(isinstance(v, dict) and "annotation" in v for v in first.values()):
            return "meta"
        if isinstance(first, dict):
            return "predictions"
        return None
    if "conversations" in first:
        return "conversations"
    if "messages" in first:
        return "trl-conversations"
    if "prompt" in first and "chosen" in first:
        return "trl-preferences"
    if "chosen" in first or "question" in first:
        return "preferences"
    return None


def _check_images(path: Path, line: int, images: list[str], root: Path | None, index: ImageIndex, report: Report) -> None:
    if root is None:
        return
    for name in images:
        if not index.exists(root, name):
            report.error(path, line, f"image {name!r} not found under {root}")


def check_conversation(path: Path, line: int, obj: Any, root: Path | None, classes: set[str], index: ImageIndex,
                       report: Report) -> None:
    problems = formats.conversation_problems(obj)
    for p in problems:
        report.error(path, line, p)
    if problems:
        return
    turns = obj["conversations"]
    for q, a in zip(turns[::2], turns[1::2]):
        problem = prompts.answer_problem(q["value"], a["value"], classes)
        if problem:
            report.error(path, line, problem)
    _check_images(path, line, formats.Conversation.from_dict(obj).images, root, index, report)


def check_preference(path: Path, line: int, obj: Any, root: Path | None, classes: set[str], index: ImageIndex,
                     report: Report) -> None:
    problems = formats.preference_problems(obj)
    for p in problems:
        report.error(path, line, p)
    if problems:
        return
    for key in ("chosen", "rejected"):
        problem = prompts.answer_problem(obj["question"], obj[key], classes)
        if problem:
            report.error(path, line, f"{key}: {problem}")
    _check_images(path, line, formats.PreferencePair.from_dict(obj).images, root, index, report)


def check_trl(kind: str) -> Callable:
    def check(path: Path, line: int, obj: Any, root: Path | None, classes: set[str], index: ImageIndex,
              report: Report) -> None:
        try:
            record = (formats.from_trl_conversation(obj) if kind == "conversations" else formats.from_trl_preference(obj))
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            report.error(path, line, f"not a TRL {kind} record: missing or malformed {e}")
            return
        images = obj.get("images", [])
        n_blocks = sum(1 for m in obj.get("messages", obj.get("prompt", [])) if isinstance(m.get("content"), list)
                       for b in m["content"] if b.get("type") == "image")
        if n_blocks != len(images):
            report.error(path, line, f"{n_blocks} image block(s) for {len(images)} image(s)")
        inner = check_conversation if kind == "conversations" else check_preference
        fake = Report()
        inner(path, line, record.to_dict(), None, classes, index, fake)
        report.errors += [e for e in fake.errors if "placeholder" not in e]
        for name in images:
            p = Path(name) if root is None else root / name
            if (root is not None or p.is_absolute()) and not index.exists(p.parent, p.name):
                report.error(path, line, f"image {name!r} not found")
    return check


CHECKS = {"conversations": check_conversation, "preferences": check_preference,
          "trl-conversations": check_trl("conversations"), "trl-preferences": check_trl("preferences")}


def validate_jsonl(path: Path, fmt: str | None, root: Path | None, classes: set[str], index: ImageIndex,
                   report: Report) -> None:
    n = 0
    for line in formats.iter_json_lines(path):
        if line.warning:
            report.warn(path, line.number, line.warning)
        if line.error:
            report.error(path, line.number or None, line.error)
            continue
        if line.obj is None:
            continue
        if fmt is None:
            fmt = detect_format(path, line.obj)
            if fmt is None:
                report.error(path, line.number, "unrecognised record: expected 'conversations', 'question'/'chosen'/"
                             "'rejected', or TRL 'messages' / 'prompt'+'chosen'+'rejected'")
                return
        CHECKS[fmt](path, line.number, line.obj, root, classes, index, report)
        n += 1
    report.records[str(path)] = n


def validate_meta(path: Path, obj: Any, classes: set[str], index: ImageIndex, report: Report) -> None:
    problems = formats.meta_problems(obj)
    for p in problems:
        report.error(path, None, p)
    if problems:
        return
    for name, entry in obj.items():
        annotation = _resolve(path, entry["annotation"])
        root = _resolve(path, entry["root"])
        if annotation is None:
            report.error(path, None, f"{name}: annotation file {entry['annotation']!r} not found")
            continue
        if root is None or not root.is_dir():
            report.error(path, None, f"{name}: image root {entry['root']!r} is not a folder")
            root = None
        before = len(report.errors)
        validate_jsonl(annotation, None, root, classes, index, report)
        count = report.records.get(str(annotation), 0)
        if len(report.errors) == before and count != entry["length"]:
            report.error(path, None, f"{name}: length is {entry['length']} but {annotation} has {count} records")
    report.records[str(path)] = len(obj)


def _resolve(meta_path: Path, name: str) -> Path | None:
    """A path in a meta file: absolute, relative to the working folder, or relative to the meta file."""
    for candidate in (Path(name), meta_path.parent / name):
        if candidate.exists():
            return candidate
    return None


def _root_from_meta(path: Path) -> Path | None:
    meta = path.parent / "meta.json"
    if not meta.exists():
        return None
    try:
        obj = formats.read_json(meta)
        for entry in obj.values():
            if Path(entry["annotation"]).name == path.name:
                return _resolve(meta, entry["root"])
    except (formats.FormatError, KeyError, TypeError, AttributeError):
        return None
    return None


def validate(paths: list[Path], fmt: str | None = None, images_root: Path | None = None,
             classes: set[str] | None = None) -> Report:
    report, index = Report(), ImageIndex()
    classes = classes or set(prompts.CLASSES)
    for path in paths:
        if not path.exists():
            report.error(path, None, "no such file")
            continue
        if path.is_dir():
            report.error(path, None, "is a folder, not a file")
            continue
        kind = fmt
        if kind in ("meta", "predictions") or (kind is None and path.suffix == ".json"):
            try:
                obj = formats.read_json(path)
            except formats.FormatError as e:
                report.error(path, e.line, e.message)
                continue
            kind = kind or detect_format(path, obj)
            if kind == "meta":
                validate_meta(path, obj, classes, index, report)
            elif kind == "predictions":
                validate_predictions(path, obj, classes, report)
            else:
                report.error(path, None, "not a meta or predictions file")
            continue
        root = images_root or _root_from_meta(path)
        validate_jsonl(path, kind, root, classes, index, report)
    return report


def validate_predictions(path: Path, obj: Any, classes: set[str], report: Report) -> None:
    """A predictions file {id: answer}: its shape, and every answer a known class (the file read once for the lines
    of the wrong ones)."""
    for problem in formats.predictions_problems(obj):
        report.error(path, None, problem)
    answers = obj if isinstance(obj, dict) else {}
    wrong = {key: answer for key, answer in answers.items()
             if isinstance(answer, str) and prompts.answer_problem(prompts.Q1, answer, classes)}
    lines = _lines_of_keys(path, set(wrong)) if wrong else {}
    for key, answer in wrong.items():
        report.error(path, lines.get(key), f"{key}: unknown class in answer {answer!r}")
    report.records[str(path)] = len(answers)


def _lines_of_keys(path: Path, keys: set[str]) -> dict[str, int]:
    """{key: the line where a JSON object's member `"key": ...` starts} for the keys found (first occurrence)."""
    needles = {f'"{key}"': key for key in keys}
    lines = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, 1):
            start = text.lstrip()
            if start.startswith('"'):
                end = start.find('"', 1)
                key = needles.get(start[: end + 1]) if end > 0 else None
                if key is not None and key not in lines:
                    lines[key] = number
    return lines
