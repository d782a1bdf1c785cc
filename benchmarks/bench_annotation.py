"""Annotation under load, as a team meets it: `python -m demo --dataset DIR --overlap 2 --users FILE` in its own
process, its two answers per item sampled from the embedded default model (a dataset of questions only, no
ready-made pairs), N logged-in annotators at once (some in Chromium by keyboard, the others through gradio_client),
and the server's process group killed with kill -9 in the middle and started again.

    python -m benchmarks.bench_annotation                         # 8 annotators (2 in Chromium), 120 s
    python -m benchmarks.bench_annotation --seconds 30 --browsers 0   # quick, API only

Each annotator looks at its item for a think time (uniform in [0.5, 1.5] x --think seconds), then presses a key
(A, B, tie, both bad with a typed correction, or skip) and waits for the next item. Prints:
- judgment stored + next item shown, median / p95 / max, for the browser (key press until the next photo is decoded
  on screen, timed in the page) and for the API (predict until the next item and its photo are back); the judgments
  whose request met the kill are counted apart, not timed;
- how often an annotator met the "preparing" panel instead of an item (answers not generated yet);
- acknowledged judgments ("saved #ID") missing from the database after the kill and restart (target 0), and
  judgments stored differently from what the annotator was shown and pressed: another item, other answers, another
  choice or correction (target 0);
Targets (issue 19): p95 <= 150 ms both ways; 0 lost; 0 stored differently.
"""

from __future__ import annotations

import argparse
import html
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHOICES = ["A", "B", "tie", "both_bad", "skip"]
WEIGHTS = [0.35, 0.3, 0.1, 0.15, 0.1]


def correction_for(shown: tuple[str, str], rng: random.Random) -> str:
    """What an annotator types after "both bad": a class sentence that neither answer says."""
    from occmllm import prompts

    return prompts.identify_answer(rng.choice([c for c in prompts.CLASSES
                                               if prompts.identify_answer(c) not in shown]))

# One judgment in the page: press the key, wait until the note shows a new "saved #" / "not saved" and the next
# photo is decoded (or the preparing panel is shown); returns [ms, note text, preparing?].
PAGE_JUDGE = """async (key) => {
  const note = () => (document.querySelector('#note') || {}).innerText || '';
  const img = () => document.querySelector('#item-photo img');
  const before = note(), src = img() && img().src;
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent('keydown', {key: key, bubbles: true}));
  while (true) {
    await new Promise(r => requestAnimationFrame(r));
    const i = img(), n = note();
    const preparing = !!document.querySelector('#question .preparing');
    if (n !== before && /saved #|not saved/.test(n) && (preparing || (i && i.src !== src && i.complete && i.naturalWidth > 0)))
      return [performance.now() - t0, n, preparing];
    if (performance.now() - t0 > 15000) return [-1, n, preparing];
  }
}"""


@dataclass
class Record:
    """What one annotator was shown and pressed, and what the server answered."""

    annotator: str
    way: str  # browser | api
    token: str | None  # "ITEM:VERSION" (API) or None (browser: matched by the answers shown)
    shown: tuple[str, str]
    choice: str
    correction: str | None
    ack: int | None = None
    note: str = ""


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"browser": [], "api": []})
    records: list[Record] = field(default_factory=list)
    preparing: dict[str, list[float]] = field(default_factory=lambda: {"browser": [], "api": []})  # s after a start
    met_kill: int = 0  # requests that failed or were not timed because of the kill (and reconnecting, 10 s after)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, name: str, error: Exception, server: "Server") -> None:
        """A request that raised: an error while the server was up (10 s after its start), else the kill's doing."""
        with self.lock:
            if server.up.is_set() and time.perf_counter() - server.started > 10:
                first_line = (str(error).splitlines() or [""])[0]
                self.errors.append(f"{name}: {type(error).__name__}: {first_line[:200]}")
            else:
                self.met_kill += 1


class Server:
    """`python -m demo ...` in a process group of its own; kill() is kill -9 of the whole group."""

    def __init__(self, args: list[str], port: int, log: Path):
        self.command = [sys.executable, "-m", "demo", *args, "--port", str(port)]
        self.url, self.log = f"http://127.0.0.1:{port}", log
        self.process: subprocess.Popen | None = None
        self.up = threading.Event()
        self.started = 0.0  # perf_counter at the last start

    def start(self) -> float:
        t0 = time.perf_counter()
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(self.command, cwd=REPO, env=env, start_new_session=True,
                                        stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                break
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"the server exited: see {self.log}")
                time.sleep(0.2)
        self.up.set()
        self.started = time.perf_counter()
        return self.started - t0

    def kill(self) -> None:
        self.up.clear()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)


def shown_answers(cand_a: str, cand_b: str) -> tuple[str, str]:
    text = re.compile(r'<div class="cand-text">(.*?)</div>', re.S)
    return tuple(html.unescape(m.group(1)) if m else "" for m in (text.search(cand_a), text.search(cand_b)))


def api_annotator(name: str, password: str, server: Server, stop: float, think: float, out: Results, seed: int):
    from gradio_client import Client

    rng = random.Random(seed)
    client, screen = None, None
    while time.perf_counter() < stop:
        try:
            if client is None:
                server.up.wait(120)
                client = Client(server.url, auth=(name, password), verbose=False, ssl_verify=False)
                screen = None
            if screen is None or not screen[7]:  # no item on screen (start, preparing, after a restart)
                screen = client.predict(name, 2, api_name="/start")
                if not screen[7]:
                    if "Nothing left" in screen[3]:
                        return
                    with out.lock:
                        out.preparing["api"].append(time.perf_counter() - server.started)
                    time.sleep(0.5)
                    continue
            time.sleep(think * rng.uniform(0.5, 1.5))
            choice = rng.choices(CHOICES, WEIGHTS)[0]
            shown = shown_answers(screen[4], screen[5])
            fix = correction_for(shown, rng) if choice == "both_bad" else None
            typed = fix or screen[6]  # the box is pre-filled with answer A
            record = Record(name, "api", screen[7], shown, choice, fix)
            alive = server.up.is_set()
            t0 = time.perf_counter()
            answer = client.predict(name, 2, typed, screen[7], api_name=f"/judge_{choice}")
            ms = 1000 * (time.perf_counter() - t0)
            found = re.search(r"saved #(\d+)", answer[0])
            record.ack, record.note = (int(found.group(1)) if found else None), answer[0]
            with out.lock:
                out.records.append(record)
                if alive and server.up.is_set():
                    out.latencies["api"].append(ms)
                else:
                    out.met_kill += 1
                if not answer[7] and "Preparing" in answer[3]:
                    out.preparing["api"].append(time.perf_counter() - server.started)
            screen = answer
        except Exception as e:  # noqa: BLE001 - the kill: reconnect once the server is back
            out.failed(name, e, server)
            client = None
            time.sleep(0.5)


def browser_annotator(name: str, password: str, server: Server, stop: float, think: float, out: Results, seed: int):
    from playwright.sync_api import sync_playwright

    from tests.demo.conftest import CHROMIUM, FLAGS

    rng = random.Random(seed)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page, ready = None, False
        while time.perf_counter() < stop:
            try:
                if not ready:
                    server.up.wait(120)
                    page = page or browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(server.url)
                    page.get_by_label("username").fill(name)
                    page.get_by_label("password").fill(password)
                    page.keyboard.press("Enter")
                    page.get_by_role("tab", name="Annotate").click(timeout=30000)
                    page.click("#btn-start")
                    ready = True
                if page.locator("#question .preparing").count() or not page.locator("#item-photo img").count():
                    page.wait_for_selector("#item-photo img", timeout=30000)
                    page.wait_for_timeout(200)
                time.sleep(think * rng.uniform(0.5, 1.5))
                choice = rng.choices(CHOICES, WEIGHTS)[0]
                shown = (page.inner_text("#cand-a .cand-text"), page.inner_text("#cand-b .cand-text"))
                page.locator("#guidelines").click()  # away from the text box: the keys are shortcuts
                fix = correction_for(shown, rng) if choice == "both_bad" else None
                if fix:
                    page.keyboard.press("e")
                    page.keyboard.press("Control+A")
                    page.keyboard.type(fix)
                    page.keyboard.press("Escape")
                key = {"A": "1", "B": "2", "tie": "3", "both_bad": "4", "skip": "s"}[choice]
                alive = server.up.is_set()
                ms, note, preparing = page.evaluate(PAGE_JUDGE, key)
                found = re.search(r"saved #(\d+)", note)
                record = Record(name, "browser", None, shown, choice, fix, int(found.group(1)) if found else None, note)
                with out.lock:
                    out.records.append(record)
                    if ms >= 0 and alive and server.up.is_set():
                        out.latencies["browser"].append(ms)
                    else:
                        out.met_kill += 1
                    if preparing:
                        out.preparing["browser"].append(time.perf_counter() - server.started)
                if ms < 0:
                    ready = False
            except Exception as e:  # noqa: BLE001 - the kill: log in again once the server is back
                out.failed(name, e, server)
                ready = False
                time.sleep(0.5)
        browser.close()


def make_dataset(root: Path, n: int) -> Path:
    """Photos of the project's generator with the Q1 question only (the app samples both answers)."""
    synth = root / "synth"
    subprocess.run([sys.executable, "-m", "data_tools.synth", "--out", str(synth), "--n", str(n), "--seed", "19",
                    "--split-test", "0.5", "--workers", "2"], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    from occmllm import formats

    dataset = root / "dataset"
    dataset.mkdir()
    shutil.copy(synth / "test_Q1.jsonl", dataset / "test_Q1.jsonl")
    formats.write_meta(dataset / "meta.json", {"test_Q1": formats.MetaEntry(str(synth / "test" / "images"),
                                                                           "test_Q1.jsonl", False, 1, n // 2)})
    return dataset


def stats(ms: list[float]) -> str:
    if not ms:
        return "no samples"
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * len(ms))) - 1)]
    return f"median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms ({len(ms)} judgments)"


def check(records: list[Record], data: Path) -> tuple[list[str], list[str], int]:
    """(acknowledged judgments missing, judgments stored differently from what was shown and pressed, rows stored
    without an acknowledgement) against the database as it is after the restart."""
    from occmllm.store import Store

    rows = {j["id"]: j for j in Store.snapshot(data).judgments()}
    lost, different = [], []
    for r in records:
        if r.ack is None:
            continue
        row = rows.get(r.ack)
        if row is None:
            lost.append(f"{r.annotator} #{r.ack}")
            continue
        stored = (row["annotator"], (row["candidate_a"], row["candidate_b"]), row["choice"], row["correction"])
        meant = (r.annotator, r.shown, r.choice, r.correction)
        if r.token is not None and r.token.split(":")[0] != row["item_id"]:
            different.append(f"#{r.ack}: item {row['item_id']}, shown {r.token}")
        elif stored != meant:
            different.append(f"#{r.ack}: stored {stored}, shown and pressed {meant}")
    acked = {r.ack for r in records if r.ack is not None}
    return lost, different, len(set(rows) - acked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120, help="how long the annotators work (default 120)")
    parser.add_argument("--annotators", type=int, default=8, help="annotators at once (default 8)")
    parser.add_argument("--browsers", type=int, default=2, help="of them in Chromium, by keyboard (default 2)")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds an annotator looks before a key "
                        "press (default 1.0)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="kill -9 the server at this share of the run, "
                        "then start it again (0: no kill; default 0.5)")
    parser.add_argument("--n", type=int, default=1200, help="photos generated; half are the items (default 1200)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    from tests.demo.conftest import free_port

    root = Path(tempfile.mkdtemp(prefix="bench-annotation-"))
    t0 = time.perf_counter()
    dataset = make_dataset(root, args.n)
    print(f"dataset: {args.n // 2} photos of the generator, question only, in {time.perf_counter() - t0:.0f} s")
    users = {f"annotator{i}": f"pw{i}" for i in range(args.annotators)}
    (root / "users.txt").write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    server = Server(["--dataset", str(dataset), "--overlap", "2", "--users", str(root / "users.txt"), "--data",
                     str(root / "data"), "--expert", "none"], free_port(), root / "server.log")
    print(f"server up in {server.start():.1f} s ({server.url}); load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")

    out = Results()
    stop = time.perf_counter() + args.seconds
    threads = []
    for i, (name, password) in enumerate(users.items()):
        target = browser_annotator if i < args.browsers else api_annotator
        threads.append(threading.Thread(target=target, args=(name, password, server, stop, args.think, out, i)))
    for thread in threads:
        thread.start()
    if args.kill_at > 0:
        time.sleep(args.seconds * args.kill_at)
        server.kill()
        print(f"kill -9 of the server's process group at {args.seconds * args.kill_at:.0f} s; restarted in "
              f"{server.start():.1f} s")
    for thread in threads:
        thread.join()
    server.stop()

    lost, different, unacked = check(out.records, root / "data")
    acked = sum(r.ack is not None for r in out.records)
    refused = [r for r in out.records if r.ack is None]
    print(f"{args.annotators} annotators ({args.browsers} in Chromium) for {args.seconds:.0f} s, think time "
          f"{args.think:g} s: {acked} judgments acknowledged, {len(refused)} presses refused or unanswered, "
          f"{out.met_kill} requests met the kill, {len(out.errors)} errors")
    print(f"judgment stored + next item shown, browser (key press -> next photo on screen): "
          f"{stats(out.latencies['browser'])} (target p95 <= 150)")
    print(f"judgment stored + next item shown, API (gradio_client, ssl_verify=False): {stats(out.latencies['api'])} "
          f"(target p95 <= 150)")
    for way, seconds in out.preparing.items():
        early = sum(s < 20 for s in seconds)
        print(f"'preparing' shown instead of an item ({way}): {len(seconds)} times, {early} of them in the first 20 s "
              f"after the server (re)started (the API annotators ask again every 0.5 s)")
    print(f"acknowledged judgments missing after kill -9 and restart: {len(lost)} (target 0); stored differently "
          f"from what was shown and pressed: {len(different)} (target 0); stored without an acknowledgement (in "
          f"flight at the kill): {unacked}")
    for line in (lost + different)[:10] + [f"refused: {r.note[:160]}" for r in refused[:5]] + out.errors[:5]:
        print("  ", line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
