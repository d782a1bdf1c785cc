"""The seed's file formats as typed records, JSONL/JSON reading and writing, and the TRL conversions.

Formats (see ../shared/fixtures/seed/ for real samples):
- SFT conversations (Q1, Q1+Q6, the Q0/Q1/Q6 CoT mix, attribute questions), one JSON object per line:
  ``{"id": "00007561", "image": "00007561.jpg", "conversations": [{"from": "human", "value": "...\\n<image>"},
  {"from": "gpt", "value": "The object is bottle."}]}``
- preference pairs: ``{"image": "00003303.jpg", "question": "...", "chosen": "Yes.", "rejected": "No."}``
- the InternVL meta file: ``{name: {"root": ..., "annotation": ..., "data_augment": false, "repeat_time": 1,
  "length": N}}``
- predictions: ``{id: answer}`` (one JSON object, indented by 2 as the seed writes it).
TRL's vision formats are produced only at the edge of a trainer: ``{"images": [...], "messages": [...]}`` and
``{"images": [...], "prompt": [...], "chosen": [...], "rejected": [...]}``.

Reading what was written gives back the same records, and writing what was read gives back the same JSON, key order
and unknown keys included. Readers raise :class:`FormatError` with the file and line; ``iter_json_lines`` yields
problems instead of raising, for the validator.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from occmllm import prompts

MAX_LINE_BYTES = 64 * 1024 * 1024  # a longer line is reported, not loaded
HUMAN, GPT, SYSTEM = "human", "gpt", "system"


class FormatError(ValueError):
    """A problem in a data file, located as ``file:line: message``."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        super().__init__(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


# --- records ---------------------------------------------------------------------------------------
@dataclass
class Conversation:
    """One SFT sample: an image (or several, or none) and alternating human/gpt turns."""

    id: str | None
    image: str | list[str] | None
    conversations: list[dict[str, str]]
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ("id", "image", "conversations")

    @property
    def images(self) -> list[str]:
        return [] if self.image is None else [self.image] if isinstance(self.image, str) else list(self.image)

    def turns(self, role: str) -> list[str]:
        return [t["value"] for t in self.conversations if t.get("from") == role]

    def to_dict(self) -> dict[str, Any]:
        known = {"id": self.id, "image": self.image, "conversations": self.conversations}
        return _ordered(known, self.extra, self.key_order, optional=("id", "image"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Conversation":
        extra = {k: v for k, v in d.items() if k not in ("id", "image", "conversations")}
        return cls(d.get("id"), d.get("image"), d["conversations"], extra, tuple(d))


@dataclass
class PreferencePair:
    """One preference pair in the seed's MPO format."""

    image: str | list[str] | None
    question: str
    chosen: str
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ("image", "question", "chosen", "rejected")

    @property
    def images(self) -> list[str]:
        return [] if self.image is None else [self.image] if isinstance(self.image, str) else list(self.image)

    def to_dict(self) -> dict[str, Any]:
        known = {"image": self.image, "question": self.question, "chosen": self.chosen, "rejected": self.rejected}
        return _ordered(known, self.extra, self.key_order, optional=("image",))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreferencePair":
        extra = {k: v for k, v in d.items() if k not in ("image", "question", "chosen", "rejected")}
        return cls(d.get("image"), d["question"], d["chosen"], d["rejected"], extra, tuple(d))


@dataclass
class MetaEntry:
    """One dataset of an InternVL meta file."""

    root: str
    annotation: str
    data_augment: bool = False
    repeat_time: float = 1
    length: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = ("root", "annotation", "data_augment", "repeat_time", "length")

    def to_dict(self) -> dict[str, Any]:
        known = {"root": self.root, "annotation": self.annotation, "data_augment": self.data_augment,
                 "repeat_time": self.repeat_time, "length": self.length}
        return _ordered(known, self.extra, self.key_order)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MetaEntry":
        names = ("root", "annotation", "data_augment", "repeat_time", "length")
        return cls(**{k: d[k] for k in names if k in d}, extra={k: v for k, v in d.items() if k not in names},
                   key_order=tuple(d))


def _ordered(known: dict, extra: dict, order: Iterable[str], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in order:
        if k in known:
            if not (k in optional and known[k] is None):
                out[k] = known[k]
        elif k in extra:
            out[k] = extra[k]
    for k, v in {**known, **extra}.items():
        if k not in out and not (k in optional and v is None):
            out[k] = v
    return out


# --- builders (the seed's targets, from prompts.py) ------------------------------------------------
def q1_conversation(id: str, image: str, cls: str) -> Conversation:
    return Conversation(id, image, [_human(prompts.Q1), _gpt(prompts.identify_answer(cls))])


def q1_q6_conversation(id: str, image: str, cls: str, clear: bool) -> Conversation:
    return Conversation(id, image, [_human(prompts.Q1), _gpt(prompts.identify_answer(cls)),
                                    _human(prompts.Q6), _gpt(prompts.clarity_answer(clear))])


def plan_conversation(id: str, image: str) -> Conversation:
    return Conversation(id, image, [_human(prompts.Q0), _gpt(prompts.Q0_PLAN)])


def attribute_conversation(id: str, image: str, attributes: dict[str, bool]) -> Conversation:
    turns: list[dict[str, str]] = []
    for i, name in enumerate(prompts.ATTRIBUTES):
        question = prompts.ATTRIBUTE_QUESTIONS[name]
        turns += [_human(prompts.with_image(question) if i == 0 else question),
                  _gpt(prompts.attribute_answer(bool(attributes[name])))]
    return Conversation(id, image, turns)


def clarity_pair(image: str, clear: bool) -> PreferencePair:
    return PreferencePair(image, prompts.Q6_PREFERENCE, prompts.clarity_answer(clear), prompts.clarity_answer(not clear))


def _human(value: str) -> dict[str, str]:
    return {"from": HUMAN, "value": value}


def _gpt(value: str) -> dict[str, str]:
    return {"from": GPT, "value": value}


# --- reading ---------------------------------------------------------------------------------------
@dataclass
class Line:
    """One line of a JSONL file: its number, the parsed object, or the problem that stopped parsing it."""

    number: int
    obj: Any = None
    error: str | None = None
    warning: str | None = None


def iter_json_lines(path: str | os.PathLike) -> Iterator[Line]:
    """Every line of a JSONL file, never raising for bad content.

    Tolerated with a warning: a UTF-8 byte-order mark, CRLF line ends, blank lines. Reported as errors: an empty
    file, non-UTF-8 bytes, bad JSON, a truncated last line, a line over ``MAX_LINE_BYTES`` (skipped unread).
    """
    path = Path(path)
    with open(path, "rb") as f:
        number, seen_content = 0, False
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the overlong line in chunks
                    raw = f.readline(MAX_LINE_BYTES)
                yield Line(number, error=f"line longer than {MAX_LINE_BYTES // 2**20} MB; not read")
                continue
            notes = []
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
                notes.append("UTF-8 byte-order mark ignored")
            last = not raw.endswith(b"\n")
            if raw.endswith(b"\r\n"):
                notes.append("CRLF line end")
            warning = "; ".join(notes) or None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Line(number, error=f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                continue
            if not text.strip():
                yield Line(number, warning="blank line skipped")
                continue
            seen_content = True
            try:
                yield Line(number, json.loads(text), warning=warning)
            except json.JSONDecodeError as e:
                truncated = last and not text.rstrip().endswith(("}", "]"))
                what = "truncated JSON: the file ends in the middle of a record" if truncated else f"bad JSON: {e.msg} at column {e.colno}"
                yield Line(number, error=what)
        if number == 0:
            yield Line(0, error="file is empty")
        elif not seen_content:
            yield Line(number, error="file has no records (only blank lines)")


def read_json_lines(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, object) for every record; raises FormatError at the first bad line."""
    out = []
    for line in iter_json_lines(path):
        if line.error:
            raise FormatError(path, line.number or None, line.error)
        if line.obj is not None:
            out.append((line.number, line.obj))
    return out


def read_conversations(path: str | os.PathLike) -> list[Conversation]:
    records = []
    for number, obj in read_json_lines(path):
        problem = conversation_problems(obj)
        if problem:
            raise FormatError(path, number, problem[0])
        records.append(Conversation.from_dict(obj))
    return records


def read_preferences(path: str | os.PathLike) -> list[PreferencePair]:
    records = []
    for number, obj in read_json_lines(path):
        problem = preference_problems(obj)
        if problem:
            raise FormatError(path, number, problem[0])
        records.append(PreferencePair.from_dict(obj))
    return records


def read_json(path: str | os.PathLike) -> Any:
    """A whole JSON file (meta, predictions), with FormatError for empty, non-UTF-8 or bad JSON."""
    raw = Path(path).read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise FormatError(path, None, "file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(path, raw.count(b"\n", 0, e.start) + 1, "not valid UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(path, e.lineno, f"bad JSON: {e.msg} at column {e.colno}") from None


def read_meta(path: str | os.PathLike) -> dict[str, MetaEntry]:
    obj = read_json(path)
    problems = meta_problems(obj)
    if problems:
        raise FormatError(path, None, problems[0])
    return {name: MetaEntry.from_dict(entry) for name, entry in obj.items()}


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    obj = read_json(path)
    problems = predictions_problems(obj)
    if problems:
        raise FormatError(path, None, problems[0])
    return obj


# --- checks (shared by the readers and data_tools.validate) ----------------------------------------
def conversation_problems(obj: Any) -> list[str]:
    """What is wrong with one SFT record (empty list when nothing is)."""
    if not isinstance(obj, dict):
        return [f"expected a JSON object, got {type(obj).__name__}"]
    if "conversations" not in obj:
        return ["missing key 'conversations'"]
    problems = []
    turns = obj["conversations"]
    if not isinstance(turns, list) or not turns:
        return ["'conversations' must be a non-empty list"]
    image = obj.get("image")
    if image is not None and not (isinstance(image, str) or (isinstance(image, list) and all(isinstance(i, str) for i in image))):
        problems.append("'image' must be a string or a list of strings")
    if "id" in obj and not isinstance(obj["id"], (str, int)):
        problems.append("'id' must be a string")
    roles = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            return problems + [f"turn {i + 1}: expected {{'from': ..., 'value': ...}}"]
        if not isinstance(t["value"], str):
            problems.append(f"turn {i + 1}: 'value' must be a string")
        roles.append(t["from"])
    body = roles[1:] if roles[0] == SYSTEM else roles
    expected = [HUMAN if i % 2 == 0 else GPT for i in range(len(body))]
    if body != expected or len(body) % 2:
        problems.append(f"wrong role order {'/'.join(roles)}: expected human/gpt alternating, starting with human "
                        "and ending with gpt")
    n_images = 0 if image is None else 1 if isinstance(image, str) else len(image)
    n_tokens = sum(str(t.get("value", "")).count(prompts.IMAGE_TOKEN) for t in turns)
    if n_tokens != n_images:
        problems.append(f"{n_tokens} {prompts.IMAGE_TOKEN} placeholder(s) for {n_images} image(s)")
    return problems


def preference_problems(obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"expected a JSON object, got {type(obj).__name__}"]
    missing = [k for k in ("question", "chosen", "rejected") if k not in obj]
    if missing:
        return [f"missing key {', '.join(repr(k) for k in missing)}"]
    problems = [f"'{k}' must be a string" for k in ("question", "chosen", "rejected") if not isinstance(obj[k], str)]
    if not problems and obj["chosen"].strip() == obj["rejected"].strip():
        problems.append("'chosen' and 'rejected' are the same answer")
    n_images = len(obj["image"]) if isinstance(obj.get("image"), list) else int(obj.get("image") is not None)
    n_tokens = str(obj["question"]).count(prompts.IMAGE_TOKEN)
    if n_tokens > n_images:
        problems.append(f"{n_tokens} {prompts.IMAGE_TOKEN} placeholder(s) for {n_images} image(s)")
    return problems


def meta_problems(obj: Any) -> list[str]:
    if not isinstance(obj, dict) or not obj:
        return ["a meta file must be a non-empty JSON object {name: {root, annotation, ...}}"]
    problems = []
    for name, entry in obj.items():
        if not isinstance(entry, dict):
            problems.append(f"{name}: expected an object")
            continue
        for key, kinds in (("root", str), ("annotation", str), ("data_augment", bool), ("repeat_time", (int, float)),
                           ("length", int)):
            if key not in entry:
                problems.append(f"{name}: missing key '{key}'")
            elif not isinstance(entry[key], kinds) or (key != "data_augment" and isinstance(entry[key], bool)):
                problems.append(f"{name}: '{key}' has the wrong type ({type(entry[key]).__name__})")
    return problems


def predictions_problems(obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return ["a predictions file must be a JSON object {id: answer}"]
    return [f"{k}: the answer must be a string" for k, v in obj.items() if not isinstance(v, str)]


# --- writing ---------------------------------------------------------------------------------------
def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[Conversation | PreferencePair | dict]) -> int:
    """Write records one per line, atomically (a crash leaves the old file or none, never half a file)."""
    lines = [_dump(r if isinstance(r, dict) else r.to_dict()) for r in records]
    _atomic_write(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_meta(path: str | os.PathLike, meta: dict[str, MetaEntry | dict]) -> None:
    obj = {name: e if isinstance(e, dict) else e.to_dict() for name, e in meta.items()}
    _atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_predictions(path: str | os.PathLike, predictions: dict[str, str]) -> None:
    _atomic_write(path, json.dumps(predictions, ensure_ascii=False, indent=2))


# --- TRL's vision formats --------------------------------------------------------------------------
_TRL_ROLE = {HUMAN: "user", GPT: "assistant", SYSTEM: "system"}
_SEED_ROLE = {v: k for k, v in _TRL_ROLE.items()}


def _content(text: str) -> list[dict[str, str]]:
    """Text with ``<image>`` placeholders as TRL content blocks, the text kept verbatim around each image."""
    parts = text.split(prompts.IMAGE_TOKEN)
    blocks: list[dict[str, str]] = []
    for i, part in enumerate(parts):
        if i:
            blocks.append({"type": "image"})
        if part:
            blocks.append({"type": "text", "text": part})
    return blocks


def _text(blocks: list[dict[str, str]] | str) -> str:
    if isinstance(blocks, str):
        return blocks
    return "".join(prompts.IMAGE_TOKEN if b.get("type") == "image" else b.get("text", "") for b in blocks)


def _image_paths(images: list[str], image_root: str | os.PathLike | None) -> list[str]:
    return [str(Path(image_root) / p) if image_root else p for p in images]


def _relative(images: list[str], image_root: str | os.PathLike | None) -> list[str]:
    if not image_root:
        return list(images)
    root = Path(image_root)
    return [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in images]


def _seed_image(conv_image: list[str], single: bool) -> str | list[str] | None:
    if not conv_image:
        return None
    return conv_image[0] if single and len(conv_image) == 1 else conv_image


def to_trl_conversation(conv: Conversation, image_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"images": [paths], "messages": [{"role", "content": [blocks]}]}`` for TRL's SFTTrainer."""
    record: dict[str, Any] = {"images": _image_paths(conv.images, image_root),
                              "messages": [{"role": _TRL_ROLE[t["from"]], "content": _content(t["value"])}
                                           for t in conv.conversations]}
    if conv.id is not None:
        record["id"] = conv.id
    return record


def from_trl_conversation(record: dict[str, Any], image_root: str | os.PathLike | None = None) -> Conversation:
    images = _relative(record.get("images", []), image_root)
    turns = [{"from": _SEED_ROLE[m["role"]], "value": _text(m["content"])} for m in record["messages"]]
    return Conversation(record.get("id"), _seed_image(images, True), turns)


def to_trl_preference(pair: PreferencePair, image_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"images", "prompt", "chosen", "rejected"}`` in TRL's conversational vision preference format.

    A question without ``<image>`` (as in the seed's pairs) gets its image before the text, as InternVL does.
    """
    images = _image_paths(pair.images, image_root)
    question = pair.question
    content = _content(question) if prompts.IMAGE_TOKEN in question else [{"type": "image"}] * len(images) + _content(question)
    return {"images": images,
            "prompt": [{"role": "user", "content": content}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": pair.chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": pair.rejected}]}]}


def from_trl_preference(record: dict[str, Any], image_root: str | os.PathLike | None = None) -> PreferencePair:
    images = _relative(record.get("images", []), image_root)
    blocks = record["prompt"][-1]["content"] if isinstance(record["prompt"], list) else record["prompt"]
    if isinstance(blocks, list):  # images placed before any text were implicit in the seed's question
        lead = 0
        while lead < len(blocks) and blocks[lead].get("type") == "image":
            lead += 1
        if lead == len(images) and all(b.get("type") != "image" for b in blocks[lead:]):
            blocks = blocks[lead:]
    answer = lambda m: _text(m[-1]["content"]) if isinstance(m, list) else m  # noqa: E731
    return PreferencePair(_seed_image(images, True), _text(blocks), answer(record["chosen"]), answer(record["rejected"]))
