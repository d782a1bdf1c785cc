"""Export annotators' judgments as training data: preference pairs and SFT / self-correction conversations.

    python -m data_tools.export --db data/annotations --out export/
    python -m data_tools.export --db data/annotations/annotations.sqlite --out export/ --zip export.zip
    python -m data_tools.validate export/meta.json export/preferences_trl.jsonl

Each stage that reads such data trains on the folder as it is, from a fresh --out, starting from the shipped default
model (the one whose answers the annotators judged) or --model PATH; there is no test split, so no evaluation:
    python train/run_all.py --preset smoke --stages 1  --data export/ --out runs/sft    # SFT on the corrected answers
    python train/run_all.py --preset smoke --stages 3a --data export/ --out runs/mpo    # MPO on the preference pairs
    python train/run_all.py --preset smoke --stages 4a --data export/ --out runs/score  # SCoRe: labels.jsonl are the
                                                                                        # reward's labels, plus the
                                                                                        # self-corrections
The database is read through a read-only snapshot (occmllm.store.Store.snapshot): running this beside the live app
creates, moves and deletes no file beside its database.

The output folder:
    OUT/meta.json                InternVL meta file: one entry per seed-format JSONL below, ``root`` = "images"
                                 (relative to the meta file)
    OUT/preferences.jsonl        seed format {image, question, chosen, rejected}
    OUT/preferences_trl.jsonl    the same pairs in TRL's vision preference format (images as "images/NAME")
    OUT/sft.jsonl                seed conversations: the question and the annotators' corrected answer
    OUT/self_correction.jsonl    seed conversations: question, the wrong answer, "check again", the correction
    OUT/labels.jsonl             seed conversations, one per judged "What's the object..." item: the question and the
                                 annotators' answer (the correction, else the accepted A / B answer): the labels of
                                 the self-correction stage's reward
    OUT/images/                  the images, named by content hash
    OUT/summary.json             counts, and what was left out and why
A file with no records is not written (and not named in meta.json).

Rules:
- one vote per annotator per item (their last judgment), skips ignored; on items judged by several annotators the
  majority decides, and an item without a strict majority is left out;
- A / B better -> the pair (winner, loser); ties are left out; "both bad" -> nothing, unless a correction was given:
  then one pair (correction, each candidate); a correction that differs from the winner also adds
  (correction, loser) and (correction, winner) and an SFT conversation;
- duplicate pairs (same image content, question, chosen, rejected) are merged;
- a pair whose answers do not read as an answer to its question (a class for "What's the object...", yes/no for
  "Is it clear...") is left out, so that the export passes ``data_tools.validate``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from occmllm import formats, prompts
from occmllm.store import Store, StoreError, copy_image

FILES = {"preferences": "preferences.jsonl", "trl": "preferences_trl.jsonl", "sft": "sft.jsonl",
         "self_correction": "self_correction.jsonl", "labels": "labels.jsonl"}


@dataclass
class ExportSummary:
    out: str
    items: int = 0  # items with at least one rated judgment
    pairs: int = 0
    sft: int = 0
    self_correction: int = 0
    labels: int = 0
    images: int = 0
    files: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what validation found (export_zip(check=True))

    def line(self) -> str:
        left = ", ".join(f"{n} {why}" for why, n in sorted(self.left_out.items())) or "nothing"
        return (f"{self.pairs} preference pairs, {self.sft} SFT and {self.self_correction} self-correction "
                f"conversations, {self.labels} labelled items, {self.images} images from {self.items} judged items -> {self.out} (left out: {left})")


def majority(votes: list[dict]) -> tuple[str | None, list[dict]]:
    """The winning choice among one item's votes (one per annotator) and the votes that made it; None without a
    strict majority."""
    counts = Counter(v["choice"] for v in votes).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None, []
    winner = counts[0][0]
    return winner, [v for v in votes if v["choice"] == winner]


def export(db: str | os.PathLike | Store, out: str | os.PathLike) -> ExportSummary:
    """Write the export folder `out` from a store (or its data folder / .sqlite file); returns the summary.
    Raises StoreError when there is nothing to export."""
    # a consistent read-only copy: nothing is created, moved or deleted beside a live database
    store = Store.snapshot(db.path if isinstance(db, Store) else db)
    out = Path(out)
    summary = ExportSummary(str(out))
    left = Counter()

    # one vote per annotator per item: their last rated judgment
    votes: dict[str, dict[str, dict]] = {}
    for j in store.judgments():
        if j["choice"] != "skip":
            votes.setdefault(j["item_id"], {})[j["annotator"]] = j
    summary.items = len(votes)

    pairs: dict[tuple, formats.PreferencePair] = {}
    sft: dict[tuple, formats.Conversation] = {}
    fixes: dict[tuple, formats.Conversation] = {}
    labels: dict[tuple, formats.Conversation] = {}
    images: dict[str, str] = {}  # source path -> exported name
    (out / "images").mkdir(parents=True, exist_ok=True)

    def image_name(path: str) -> str | None:
        if path not in images:
            try:
                images[path] = copy_image(path, out / "images")
            except OSError:
                return None
        return images[path]

    def add_pair(image: str, question: str, chosen: str, rejected: str) -> None:
        if chosen.strip() == rejected.strip():
            left["pairs with the same answer twice"] += 1
        elif not (prompts.answer_fits(question, chosen) and prompts.answer_fits(question, rejected)):
            left["pairs with an answer that is not a class / yes-no"] += 1
        else:
            pairs.setdefault((image, question, chosen, rejected), formats.PreferencePair(image, question, chosen, rejected))

    for id, by_annotator in votes.items():
        winner, winning = majority(list(by_annotator.values()))
        if winner is None:
            left["items without a majority"] += 1
            continue
        if winner == "tie":
            left["ties"] += 1
            continue
        first = winning[-1]
        image = image_name(first["image"])
        if image is None:
            left["items whose image is missing"] += 1
            continue
        question, a, b = first["question"], first["candidate_a"], first["candidate_b"]
        corrections = Counter(v["correction"] for v in winning if v["correction"])
        correction = corrections.most_common(1)[0][0] if corrections else None
        first_turn = prompts.with_image(prompts.strip_image(question))

        def label(answer: str) -> None:  # the annotators' answer to a "What's the object..." item
            if prompts.strip_image(question).startswith(prompts.IDENTIFY_TEXT) and prompts.answer_fits(question, answer):
                labels[(image, question)] = formats.Conversation(
                    id, image, [{"from": "human", "value": first_turn}, {"from": "gpt", "value": answer}])

        if winner in ("A", "B"):
            chosen, rejected = (a, b) if winner == "A" else (b, a)
            label(chosen)
            add_pair(image, question, chosen, rejected)
            if correction and correction.strip() != chosen.strip():
                add_pair(image, question, correction, chosen)
                add_pair(image, question, correction, rejected)
            else:
                correction = None
        elif winner == "both_bad":
            if not correction:
                left["'both bad' without a correction"] += 1
                continue
            add_pair(image, question, correction, a)
            add_pair(image, question, correction, b)
        if correction:
            if not prompts.answer_fits(question, correction):
                left["corrections that are not a class / yes-no"] += 1
                continue
            label(correction)
            sft.setdefault((image, question, correction), formats.Conversation(
                id, image, [{"from": "human", "value": first_turn}, {"from": "gpt", "value": correction}]))
            wrong = next((x for x in (b, a) if prompts.answer_fits(question, x) and prompts.strip_image(question)
                          .startswith(prompts.IDENTIFY_TEXT) and prompts.parse_object(x) != prompts.parse_object(correction)), None)
            if wrong is not None:
                fixes.setdefault((image, question, wrong, correction), formats.Conversation(id, image, [
                    {"from": "human", "value": first_turn}, {"from": "gpt", "value": wrong},
                    {"from": "human", "value": prompts.strip_image(prompts.SECOND_ATTEMPT)},
                    {"from": "gpt", "value": correction}]))

    if not pairs and not sft:
        raise StoreError(f"nothing to export from {store.path}: {summary.items} judged items gave no preference pair "
                         f"and no correction ({', '.join(f'{n} {w}' for w, n in left.items()) or 'no judgments yet'})")

    # write: seed JSONL + meta, TRL pairs, summary; then drop images nothing refers to
    meta: dict[str, formats.MetaEntry] = {}
    written = {"preferences": list(pairs.values()), "sft": list(sft.values()), "self_correction": list(fixes.values()),
               "labels": list(labels.values())}
    for key, records in written.items():
        path = out / FILES[key]
        if records:
            formats.write_jsonl(path, records)
            meta[f"annotated_{key}"] = formats.MetaEntry("images", FILES[key], False, 1, len(records))
            summary.files.append(FILES[key])
        else:
            path.unlink(missing_ok=True)
    trl_path = out / FILES["trl"]
    if pairs:
        formats.write_jsonl(trl_path, [formats.to_trl_preference(p, "images") for p in pairs.values()])
        summary.files.append(FILES["trl"])
    else:
        trl_path.unlink(missing_ok=True)
    formats.write_meta(out / "meta.json", meta)
    used = {r.image for records in written.values() for r in records}
    for name in set(images.values()) - used:
        (out / "images" / name).unlink(missing_ok=True)
    summary.pairs, summary.sft, summary.self_correction, summary.images = len(pairs), len(sft), len(fixes), len(used)
    summary.labels = len(labels)
    summary.left_out = dict(left)
    summary.files = ["meta.json"] + summary.files + ["images/", "summary.json"]
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def export_zip(db: str | os.PathLike | Store, zip_path: str | os.PathLike, check: bool = False) -> ExportSummary:
    """Export into a temporary folder and pack it as `zip_path` (the folder's files at the zip's top level). With
    `check`, the export is validated first (occmllm.validate: its meta.json and the TRL pairs) and
    `summary.problems` lists what is wrong (empty: valid)."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory(prefix="occmllm-export-") as tmp:
        summary = export(db, tmp)
        if check:
            from occmllm.validate import validate

            files = [Path(tmp) / "meta.json"] + ([Path(tmp) / FILES["trl"]] if summary.pairs else [])
            summary.problems = [problem.replace(tmp, zip_path.name) for problem in validate(files).errors]
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(tmp).as_posix())
    summary.out = str(zip_path)
    return summary
