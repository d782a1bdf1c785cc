"""The annotation store: items to judge and annotators' judgments, in one SQLite file (WAL mode) under a data folder.

    >>> from occmllm.store import Store, items_from_dataset
    >>> store = Store("data/annotations")                       # creates data/annotations/annotations.sqlite
    >>> store.add_items(items_from_dataset("data/synth", split="test"))
    >>> item = store.next_item("alice", overlap=2)              # None when alice has nothing left to do
    >>> store.add_judgment("alice", item.id, "A", correction="The object is jar.", shown=item.version)
    >>> store.undo_last("alice")                                # removes alice's last judgment
    >>> store.progress("alice", overlap=2), store.agreement(), store.judgments_frame()

Rules:
- one row per judgment: annotator, time, item, image, question, both candidates and their sources, the choice
  (``A``, ``B``, ``tie``, ``both_bad``, ``skip``), the correction, the model id;
- an item's two candidates are written once (``set_candidates`` is a compare-and-set: the first writer wins) and
  never change afterwards; ``Item.version`` is a hash of the two answers;
- a judgment names the item and the version of its answers that the annotator saw (``shown``), and is refused
  (``StaleJudgment``, nothing stored) when they do not match what the store holds, when the annotator already judged
  that item, or when the store handed that annotator another item since (their "screen": the last item
  ``next_item`` or ``undo_last`` gave them): a second key press never lands on an item nobody showed;
- a write returns only after SQLite committed it with ``synchronous=FULL`` in WAL mode: a judgment that was
  acknowledged survives the process being killed (and the machine losing power, as far as fsync goes);
- the queue gives an item to at most ``overlap`` different annotators (skips do not count), never twice to the same
  annotator, and prefers items that others already started, so that overlapped items get completed first. An item
  handed out is held for its annotator for ``CLAIM_SECONDS`` so that concurrent annotators get different items.
Several processes and threads may use the same folder at once (one connection per thread, ``busy_timeout``).
``Store.snapshot(folder)`` reads a consistent copy through a read-only connection (SQLite's backup API) and creates,
moves or deletes no file beside a live database: what an export beside the running app uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from occmllm import formats, prompts

CHOICES = ("A", "B", "tie", "both_bad", "skip")
RATED = ("A", "B", "tie", "both_bad")  # the choices that count as a judgment for overlap and agreement
DB_NAME = "annotations.sqlite"
CLAIM_SECONDS = 600.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, image TEXT NOT NULL, question TEXT NOT NULL,
    candidate_a TEXT, candidate_b TEXT, source_a TEXT, source_b TEXT, model_id TEXT,
    reference TEXT, origin TEXT, added REAL NOT NULL, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS judgments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, annotator TEXT NOT NULL, time REAL NOT NULL, item_id TEXT NOT NULL,
    image TEXT NOT NULL, question TEXT NOT NULL, candidate_a TEXT NOT NULL, candidate_b TEXT NOT NULL,
    source_a TEXT, source_b TEXT, choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'both_bad', 'skip')),
    correction TEXT, model_id TEXT);
CREATE INDEX IF NOT EXISTS judgments_item ON judgments (item_id);
CREATE INDEX IF NOT EXISTS items_unready ON items (position)
    WHERE COALESCE(candidate_a, '') = '' OR COALESCE(candidate_b, '') = '';
CREATE INDEX IF NOT EXISTS judgments_annotator ON judgments (annotator, id);
CREATE TABLE IF NOT EXISTS claims (
    item_id TEXT NOT NULL, annotator TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (item_id, annotator));
CREATE TABLE IF NOT EXISTS screens (
    annotator TEXT PRIMARY KEY, item_id TEXT NOT NULL, version TEXT NOT NULL, judged INTEGER NOT NULL DEFAULT 0,
    time REAL NOT NULL);
"""


class StoreError(RuntimeError):
    """A data folder or dataset that cannot be used; the message says which and why."""


class StaleJudgment(ValueError):
    """A judgment that does not match what the store last showed that annotator; nothing was stored."""


@dataclass
class Item:
    """Something to judge: an image, a question and two candidate answers (empty until generated)."""

    id: str
    image: str  # absolute path
    question: str
    candidate_a: str | None = None
    candidate_b: str | None = None
    source_a: str | None = None
    source_b: str | None = None
    model_id: str | None = None
    reference: str | None = None  # the dataset's own answer, when it has one
    origin: str | None = None  # the file (or upload) it came from
    problem: str | None = None  # why no candidates could be made (the item is then never shown)

    @property
    def ready(self) -> bool:
        return bool(self.candidate_a) and bool(self.candidate_b)

    @property
    def version(self) -> str:
        """A hash of the two answers: what a judgment names as the answers the annotator saw."""
        return candidates_version(self.candidate_a, self.candidate_b)


@dataclass
class Progress:
    mine: int  # items this annotator judged (skips included)
    available: int  # items still waiting for this annotator
    done_items: int  # items with `overlap` judgments
    total_items: int
    judgments: int  # all judgments by everyone, skips excluded
    annotators: int


@dataclass
class Agreement:
    method: str  # "cohen", "fleiss" or "none"
    kappa: float | None
    items: int  # overlapped items it was computed on
    annotators: list[str] = field(default_factory=list)
    observed: float | None = None  # raw agreement


def item_id(image: str, question: str) -> str:
    return hashlib.sha1(f"{image}\n{question}".encode()).hexdigest()[:16]


def candidates_version(a: str | None, b: str | None) -> str:
    if not a or not b:
        return ""
    return hashlib.sha1(f"{a}\x00{b}".encode()).hexdigest()[:12]


class Store:
    """All reads and writes of the annotation database; safe to share between threads."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"data folder {self.folder} is not writable: {e.strerror or e}") from None
        self.path = self.folder / DB_NAME
        self.images = self.folder / "images"
        self._local = threading.local()
        self._memory: sqlite3.Connection | None = None
        try:
            db = self._db()
            db.executescript(SCHEMA)
            if "problem" not in {r["name"] for r in db.execute("PRAGMA table_info(items)")}:  # older databases
                db.execute("ALTER TABLE items ADD COLUMN problem TEXT")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable annotation database ({e})") from None

    @classmethod
    def snapshot(cls, where: str | os.PathLike) -> "Store":
        """A read-only, consistent copy of the store in a data folder (or its .sqlite file), held in memory: read
        through a read-only connection with SQLite's backup API, so that nothing beside a live database is created,
        moved or deleted (its -wal and -shm files stay the live server's). Writing to the copy changes nothing on
        disk. StoreError when there is no database there."""
        path = Path(where)
        path = path if path.is_file() else path / DB_NAME
        if not path.is_file():
            raise StoreError(f"no annotation database at {where} (expected {Path(where) / DB_NAME} or the .sqlite file)")
        # with no -wal beside it nobody is writing: open it as immutable, so that SQLite does not create the -shm
        live = Path(f"{path}-wal").exists()
        uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
        try:
            source = sqlite3.connect(uri, uri=True, timeout=30)
            try:
                source.execute("PRAGMA busy_timeout=30000")
                memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                source.backup(memory)
            finally:
                source.close()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a usable annotation database ({e})") from None
        memory.row_factory = sqlite3.Row
        memory.executescript(SCHEMA)
        if "problem" not in {r["name"] for r in memory.execute("PRAGMA table_info(items)")}:
            memory.execute("ALTER TABLE items ADD COLUMN problem TEXT")
        store = cls.__new__(cls)
        store.folder, store.path, store.images = path.parent, path, path.parent / "images"
        store._local, store._memory = threading.local(), memory
        return store

    # --- connections ---------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection, durable: bool):
            self.db, self.durable = db, durable

        def __enter__(self) -> sqlite3.Connection:
            if not self.durable:  # WAL + NORMAL: survives a killed process, fsync'ed by the next durable commit
                self.db.execute("PRAGMA synchronous=NORMAL")  # (a no-op on a snapshot in memory)
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, tb) -> None:
            try:
                self.db.execute("COMMIT" if kind is None else "ROLLBACK")
            finally:
                if not self.durable:
                    self.db.execute("PRAGMA synchronous=FULL")

    def _write(self, durable: bool = True) -> "_Transaction":
        """A write transaction; durable=True (the default) commits with fsync (synchronous=FULL)."""
        return Store._Transaction(self._db(), durable)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- items ---------------------------------------------------------------------------------------
    def add_items(self, items: Iterable[Item]) -> int:
        """Add items (an item already there keeps its candidates); returns how many were new."""
        items = list(items)
        now = time.time()
        with self._write() as db:
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM items").fetchone()[0]
            before = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO items (id, image, question, candidate_a, candidate_b, source_a, source_b, "
                "model_id, reference, origin, added, position) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(it.id, it.image, it.question, it.candidate_a, it.candidate_b, it.source_a, it.source_b, it.model_id,
                  it.reference, it.origin, now, start + i) for i, it in enumerate(items)])
            after = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return after - before

    def add_photos(self, paths: Iterable[str | os.PathLike], question: str = prompts.Q1) -> list[Item]:
        """Copy uploaded photos into the data folder's images/ (named by content hash) and add them as items."""
        self.images.mkdir(exist_ok=True)
        items = []
        for path in paths:
            path = Path(path)
            data = path.read_bytes()
            name = hashlib.sha1(data).hexdigest()[:16] + (path.suffix.lower() or ".jpg")
            target = self.images / name
            if not target.exists():
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            items.append(Item(item_id(str(target), question), str(target.resolve()), question, origin=f"upload:{path.name}"))
        self.add_items(items)
        return items

    def set_candidates(self, item: Item, a: str, b: str, source_a: str, source_b: str, model_id: str | None) -> Item:
        """Give an item its two answers, once: an item that already has answers keeps them (the first writer wins,
        in one transaction). Returns the item as stored."""
        if not a or not b:
            raise ValueError(f"item {item.id}: two non-empty answers are needed, got {a!r} and {b!r}")
        with self._write() as db:
            db.execute("UPDATE items SET candidate_a=?, candidate_b=?, source_a=?, source_b=?, model_id=?, problem=NULL "
                       "WHERE id=? AND COALESCE(candidate_a, '') = '' AND COALESCE(candidate_b, '') = ''",
                       (a, b, source_a, source_b, model_id, item.id))
            row = db.execute("SELECT * FROM items WHERE id=?", (item.id,)).fetchone()
        if row is None:
            raise StoreError(f"item {item.id} is not in {self.path}")
        return _item(row)

    def set_problem(self, item: Item, problem: str) -> None:
        """Mark an item without answers as one that could not be given any (it is then never handed out)."""
        with self._write() as db:
            db.execute("UPDATE items SET problem=? WHERE id=? AND COALESCE(candidate_a, '') = ''", (problem, item.id))

    def item(self, id: str) -> Item | None:
        row = self._db().execute("SELECT * FROM items WHERE id=?", (id,)).fetchone()
        return _item(row) if row else None

    def items(self) -> list[Item]:
        return [_item(r) for r in self._db().execute("SELECT * FROM items ORDER BY position")]

    def image_paths(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT DISTINCT image FROM items")]

    def count_items(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def unready_items(self, limit: int = 1) -> list[Item]:
        """Up to `limit` items without their two candidates yet, in queue order (one indexed query, no full scan)."""
        return [_item(r) for r in self._db().execute(
            "SELECT * FROM items WHERE (COALESCE(candidate_a, '') = '' OR COALESCE(candidate_b, '') = '') "
            "AND problem IS NULL ORDER BY position LIMIT ?", (limit,))]

    def count_open_ready(self, overlap: int = 1) -> int:
        """Ready items that still want judgments (fewer than `overlap` rated ones): the queue's buffer."""
        return self._db().execute(
            """SELECT COUNT(*) FROM items WHERE COALESCE(candidate_a, '') != '' AND COALESCE(candidate_b, '') != ''
                 AND (SELECT COUNT(*) FROM judgments j WHERE j.item_id = items.id AND j.choice != 'skip') < ?""",
            (overlap,)).fetchone()[0]

    # --- the queue -----------------------------------------------------------------------------------
    def next_item(self, annotator: str, overlap: int = 1, claim: bool = True, ready: bool = False) -> Item | None:
        """The next item for `annotator`: one they never judged (or skipped), with fewer than `overlap` judgments
        and claims by others; items others already started come first. With `ready`, only items that have their
        two answers. With `claim` (the default) the item is claimed for them and becomes their screen: the item
        their next judgment must name."""
        annotator = _name(annotator)
        now = time.time()
        only_ready = "AND COALESCE(candidate_a, '') != '' AND COALESCE(candidate_b, '') != ''" if ready else ""
        with self._write(durable=False) as db:  # a claim is a soft hold, not an acknowledged write: no fsync
            if claim:
                db.execute("DELETE FROM claims WHERE until < ? OR annotator = ?", (now, annotator))
            row = db.execute(
                f"""SELECT items.*,
                          (SELECT COUNT(*) FROM judgments j WHERE j.item_id = items.id AND j.choice != 'skip') AS n,
                          (SELECT COUNT(*) FROM claims c WHERE c.item_id = items.id) AS held
                   FROM items
                   WHERE NOT EXISTS (SELECT 1 FROM judgments j WHERE j.item_id = items.id AND j.annotator = ?)
                     AND problem IS NULL {only_ready}
                     AND (SELECT COUNT(*) FROM judgments j WHERE j.item_id = items.id AND j.choice != 'skip')
                         + (SELECT COUNT(*) FROM claims c WHERE c.item_id = items.id) < ?
                   ORDER BY n DESC, position LIMIT 1""", (annotator, overlap)).fetchone()
            if row is None:
                return None
            item = _item(row)
            if claim:
                db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?)", (item.id, annotator, now + CLAIM_SECONDS))
                db.execute("INSERT OR REPLACE INTO screens VALUES (?,?,?,0,?)", (annotator, item.id, item.version, now))
        return item

    def screen(self, annotator: str) -> Item | None:
        """The item last handed to `annotator` and not judged yet (what their screen shows), or None."""
        row = self._db().execute("SELECT item_id FROM screens WHERE annotator = ? AND judged = 0",
                                 (_name(annotator),)).fetchone()
        return self.item(row["item_id"]) if row else None

    def release(self, annotator: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM claims WHERE annotator = ?", (_name(annotator),))

    # --- judgments -----------------------------------------------------------------------------------
    def add_judgment(self, annotator: str, item: Item | str, choice: str, correction: str | None = None,
                     shown: str | None = None) -> int:
        """Store one judgment durably and return its row id (the acknowledgement).

        `item` is the item (or its id) the annotator judged and `shown` the version of its answers on their screen
        (`Item.version`; by default the version of the `item` passed). The answers stored with the judgment are the
        store's, checked in the same transaction to be the ones shown. Raises StaleJudgment (nothing stored) when
        they differ, when the annotator already judged the item, or when the store has handed them another item
        since this one; ValueError for a bad choice or an item without answers."""
        annotator = _name(annotator)
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        id = item if isinstance(item, str) else item.id
        if shown is None:
            shown = "" if isinstance(item, str) else item.version
        correction = (correction or "").strip() or None
        with self._write() as db:
            row = db.execute("SELECT * FROM items WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise StaleJudgment(f"item {id} is not in this store; nothing was stored")
            stored = _item(row)
            if not stored.ready and choice != "skip":
                raise ValueError(f"item {id} has no candidates to judge")
            if stored.version != shown:
                raise StaleJudgment("the answers on your screen are not this item's answers; nothing was stored")
            if db.execute("SELECT 1 FROM judgments WHERE item_id = ? AND annotator = ?", (id, annotator)).fetchone():
                raise StaleJudgment("you already judged this item (a second key press?); nothing more was stored")
            screen = db.execute("SELECT item_id FROM screens WHERE annotator = ?", (annotator,)).fetchone()
            if screen is not None and screen["item_id"] != id:
                raise StaleJudgment("that item is no longer on your screen; nothing was stored")
            cur = db.execute(
                "INSERT INTO judgments (annotator, time, item_id, image, question, candidate_a, candidate_b, source_a,"
                " source_b, choice, correction, model_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (annotator, time.time(), id, stored.image, stored.question, stored.candidate_a or "",
                 stored.candidate_b or "", stored.source_a, stored.source_b, choice, correction, stored.model_id))
            db.execute("DELETE FROM claims WHERE item_id = ? AND annotator = ?", (id, annotator))
            db.execute("UPDATE screens SET judged = 1 WHERE annotator = ?", (annotator,))
            return cur.lastrowid

    def undo_last(self, annotator: str) -> Item | None:
        """Remove `annotator`'s last judgment; returns its item (to show again), or None when there is none."""
        annotator = _name(annotator)
        with self._write() as db:
            row = db.execute("SELECT id, item_id FROM judgments WHERE annotator = ? ORDER BY id DESC LIMIT 1",
                             (annotator,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM judgments WHERE id = ?", (row["id"],))
            db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?)", (row["item_id"], annotator,
                                                                       time.time() + CLAIM_SECONDS))
            item = _item(db.execute("SELECT * FROM items WHERE id = ?", (row["item_id"],)).fetchone())
            db.execute("INSERT OR REPLACE INTO screens VALUES (?,?,?,0,?)", (annotator, item.id, item.version,
                                                                             time.time()))
        return item

    def judgment_ids(self) -> set[int]:
        return {r[0] for r in self._db().execute("SELECT id FROM judgments")}

    def judgments(self) -> list[dict]:
        return [dict(r) for r in self._db().execute("SELECT * FROM judgments ORDER BY id")]

    def judgments_frame(self, annotator: str | None = None, choice: str | None = None, search: str | None = None):
        """The judgments as a pandas DataFrame (newest first), optionally filtered."""
        import pandas as pd

        columns = ["id", "time", "annotator", "item_id", "question", "candidate_a", "candidate_b", "choice",
                   "correction", "source_a", "source_b", "model_id", "image"]
        frame = pd.DataFrame(self.judgments(), columns=columns)
        frame = frame.assign(time=pd.to_datetime(frame.time, unit="s").dt.strftime("%Y-%m-%d %H:%M:%S"))
        return filter_judgments(frame.iloc[::-1].reset_index(drop=True), annotator, choice, search)

    # --- progress and agreement ----------------------------------------------------------------------
    def progress(self, annotator: str | None, overlap: int = 1) -> Progress:
        """Counts for the progress bars, computed in SQL (a few ms with thousands of items and judgments)."""
        db = self._db()
        total, done_items, judgments = db.execute(
            """SELECT (SELECT COUNT(*) FROM items),
                      (SELECT COUNT(*) FROM (SELECT 1 FROM judgments WHERE choice != 'skip' GROUP BY item_id
                                             HAVING COUNT(*) >= ?)),
                      (SELECT COUNT(*) FROM judgments WHERE choice != 'skip')""", (overlap,)).fetchone()
        annotators = db.execute("SELECT COUNT(DISTINCT annotator) FROM judgments").fetchone()[0]
        mine = available = 0
        if annotator:
            name = _name(annotator)
            mine = db.execute("SELECT COUNT(DISTINCT item_id) FROM judgments WHERE annotator = ?", (name,)).fetchone()[0]
            # items this annotator never judged whose rated judgments + others' live claims leave room for them
            taken = db.execute(
                """SELECT COUNT(*) FROM (
                       SELECT item_id, SUM(n) AS n FROM (
                           SELECT item_id, COUNT(*) AS n FROM judgments WHERE choice != 'skip' GROUP BY item_id
                           UNION ALL
                           SELECT item_id, COUNT(*) AS n FROM claims WHERE annotator != ? AND until >= ? GROUP BY item_id)
                       GROUP BY item_id HAVING SUM(n) >= ?) AS full
                   WHERE item_id IN (SELECT id FROM items)
                     AND item_id NOT IN (SELECT item_id FROM judgments WHERE annotator = ?)""",
                (name, time.time(), overlap, name)).fetchone()[0]
            available = total - mine - taken
        return Progress(mine, available, done_items, total, judgments, annotators)

    def ratings(self) -> dict[str, dict[str, str]]:
        """{item id: {annotator: choice}} over the rated choices (skips left out); the last judgment counts."""
        out: dict[str, dict[str, str]] = {}
        for r in self._db().execute("SELECT item_id, annotator, choice FROM judgments WHERE choice != 'skip' ORDER BY id"):
            out.setdefault(r[0], {})[r[1]] = r[2]
        return out

    def agreement(self) -> Agreement:
        return agreement(self.ratings())

    def disagreements(self, ratings: dict[str, dict[str, str]] | None = None):
        """Overlapped items whose annotators chose differently, as a DataFrame (item, question, candidates, votes);
        `ratings`: self.ratings() when the caller has them already."""
        import pandas as pd

        rows = []
        for id, votes in (self.ratings() if ratings is None else ratings).items():
            if len(votes) >= 2 and len(set(votes.values())) > 1:
                item = self.item(id)
                rows.append({"item_id": id, "question": item.question if item else "",
                             "candidate_a": item.candidate_a if item else "", "candidate_b": item.candidate_b if item else "",
                             "votes": ", ".join(f"{a}: {c}" for a, c in sorted(votes.items()))})
        return pd.DataFrame(rows, columns=["item_id", "question", "candidate_a", "candidate_b", "votes"])


def filter_judgments(frame, annotator: str | None = None, choice: str | None = None, search: str | None = None):
    """The rows of a judgments_frame by one annotator, with one choice, or with `search` in their texts."""
    if annotator:
        frame = frame[frame.annotator == annotator]
    if choice:
        frame = frame[frame.choice == choice]
    if search:
        text = frame[["question", "candidate_a", "candidate_b", "correction", "item_id"]].fillna("").agg(" ".join, axis=1)
        frame = frame[text.str.contains(search, case=False, regex=False)]
    return frame.reset_index(drop=True)


def _name(annotator: str) -> str:
    name = (annotator or "").strip()
    if not name:
        raise ValueError("an annotator name is required")
    return name


def _item(row: sqlite3.Row) -> Item:
    return Item(row["id"], row["image"], row["question"], row["candidate_a"], row["candidate_b"], row["source_a"],
                row["source_b"], row["model_id"], row["reference"], row["origin"], row["problem"])


# --- agreement -------------------------------------------------------------------------------------
def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (no items, or chance agreement
    is 1 because both always used the same single label)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in set(first) | set(second)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(items: list[list[str]]) -> float | None:
    """Fleiss' kappa over items rated by two or more raters each (the number of raters may vary per item);
    None when undefined."""
    items = [labels for labels in items if len(labels) >= 2]
    if not items:
        return None
    totals: Counter = Counter()
    agreements = []
    for labels in items:
        counts = Counter(labels)
        n = len(labels)
        totals.update(counts)
        agreements.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
    observed = sum(agreements) / len(agreements)
    all_labels = sum(totals.values())
    expected = sum((c / all_labels) ** 2 for c in totals.values())
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement(ratings: dict[str, dict[str, str]]) -> Agreement:
    """Cohen's kappa when exactly two annotators share the overlapped items, Fleiss' kappa when more do."""
    overlapped = {i: v for i, v in ratings.items() if len(v) >= 2}
    if not overlapped:
        return Agreement("none", None, 0)
    annotators = sorted({a for v in overlapped.values() for a in v})
    agree = [len(set(v.values())) == 1 for v in overlapped.values()]
    observed = sum(agree) / len(agree)
    if len(annotators) == 2:
        a, b = annotators
        pairs = [(v[a], v[b]) for v in overlapped.values()]
        return Agreement("cohen", cohen_kappa(pairs), len(pairs), annotators, observed)
    return Agreement("fleiss", fleiss_kappa([list(v.values()) for v in overlapped.values()]), len(overlapped),
                     annotators, observed)


# --- items from a dataset folder -------------------------------------------------------------------
def items_from_dataset(folder: str | os.PathLike, split: str | None = None, limit: int | None = None) -> list[Item]:
    """Items from a folder of seed-format JSONL files and their images.

    Reads a synth-style folder (``meta.json`` + ``{split}_*.jsonl`` with images under ``{split}/images``), or any
    folder of seed JSONL files with the images beside them or under ``images/``. Preference files give items whose
    candidates are the file's chosen and rejected answers (in an order fixed by the item, so A is not always the
    chosen one); conversation files give one item per (image, first question) with the dataset's answer as reference
    and no candidates yet (the app samples them from a model). Raises StoreError with a readable reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"dataset folder {folder} does not exist")
    roots: dict[Path, Path] = {}
    meta = folder / "meta.json"
    if meta.exists():
        try:
            for entry in formats.read_meta(meta).values():
                annotation = _resolve(folder, entry.annotation)
                if annotation is not None:
                    roots[annotation] = _resolve(folder, entry.root) or folder
        except formats.FormatError as e:
            raise StoreError(str(e)) from None
    for path in sorted(folder.glob("*.jsonl")):
        roots.setdefault(path.resolve(), _guess_root(folder, path))
    if split:
        roots = {p: r for p, r in roots.items() if p.name.startswith(f"{split}_")}
    if not roots:
        raise StoreError(f"dataset folder {folder} has no JSONL files (expected the seed's formats, e.g. "
                         f"train_Q1.jsonl, or a meta.json naming them)")
    items: dict[str, Item] = {}
    for path, root in roots.items():
        try:
            records = formats.read_json_lines(path)
        except formats.FormatError as e:
            raise StoreError(str(e)) from None
        for number, obj in records:
            for item in _items_from_record(obj, root, path, number):
                items.setdefault(item.id, item)
            if limit and len(items) >= limit:
                return list(items.values())[:limit]
    if not items:
        raise StoreError(f"dataset folder {folder}: no usable records")
    return list(items.values())


def _resolve(folder: Path, name: str) -> Path | None:
    for candidate in (Path(name), folder / name):
        if candidate.exists():
            return candidate.resolve()
    return None


def _guess_root(folder: Path, path: Path) -> Path:
    from occmllm.dataset import kind_folder

    split = path.name.split("_")[0]
    for candidate in (kind_folder(folder, split, "images"), folder / "images", folder):
        if candidate.is_dir():
            return candidate.resolve()
    return folder.resolve()


def _items_from_record(obj, root: Path, path: Path, number: int) -> list[Item]:
    origin = f"{path.name}:{number}"
    if isinstance(obj, dict) and "chosen" in obj and not formats.preference_problems(obj):
        pair = formats.PreferencePair.from_dict(obj)
        if len(pair.images) != 1:
            return []
        image = _image(root, pair.images[0], path, number)
        id = item_id(image, pair.question)
        a, b, sa, sb = pair.chosen, pair.rejected, "dataset:chosen", "dataset:rejected"
        if int(id, 16) % 2:  # fixed per item, so that A is the chosen one only half of the time
            a, b, sa, sb = b, a, sb, sa
        return [Item(id, image, pair.question, a, b, sa, sb, "dataset", pair.chosen, origin)]
    if isinstance(obj, dict) and "conversations" in obj and not formats.conversation_problems(obj):
        conv = formats.Conversation.from_dict(obj)
        if len(conv.images) != 1:
            return []
        image = _image(root, conv.images[0], path, number)
        question, answers = conv.turns("human")[0], conv.turns("gpt")
        if prompts.strip_image(question) not in (prompts.IDENTIFY_TEXT, prompts.CLARITY_TEXT):
            return []
        return [Item(item_id(image, question), image, question, reference=answers[0] if answers else None,
                     origin=origin)]
    raise StoreError(f"{path}:{number}: not a seed conversation or preference record")


def _image(root: Path, name: str, path: Path, number: int) -> str:
    image = root / name
    if not image.exists():
        raise StoreError(f"{path}:{number}: image {name!r} not found under {root}")
    return str(image)


def copy_image(src: str | os.PathLike, folder: Path) -> str:
    """Copy an image into `folder` (named by item-independent content hash) and return its file name."""
    src = Path(src)
    data = src.read_bytes()
    name = hashlib.sha1(data).hexdigest()[:16] + src.suffix.lower()
    target = folder / name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return name


def to_json(item: Item) -> str:
    return json.dumps(asdict(item), ensure_ascii=False)
