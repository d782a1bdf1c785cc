"""Benchmark of the app against a live server (the embedded default model on CPU, the shipped learned 3D expert).

    python -m benchmarks.bench_demo                          # everything, 2 minutes of 8 annotators
    python -m benchmarks.bench_demo --seconds 0 --expert box # quick: no concurrent run, the tests' box expert
    python -m benchmarks.bench_demo --no-browser             # without Chromium

Prints:
- explore: time from Run to the first step on screen, and the whole CoT with 3D (forced), through gradio_client,
  with the 3D expert named by --expert (default: the shipped learned one; "box" is the tests' in-code box);
- a judgment stored + the next item shown on a dataset of READY-MADE pairs (no answer generated), median and p95,
  measured three ways (the figures a team meets, with the model's answers, come from bench_annotation):
    browser   Chromium (Playwright): from the key press "1" to the next item on screen (its photo decoded), timed
              inside the page; what an annotator waits for;
    API       gradio_client predict("/judge_A") until the next item is returned and its photo downloaded, with
              ssl_verify=False (the URL is plain http; with the default, gradio_client builds a TLS context from the
              CA bundle for each of its 3 HTTP requests per call, ~40 ms each on this CPU);
    API (default client)  the same with gradio_client's defaults, for reference;
- N annotators at once (gradio_client) for --seconds: judgments/s, errors, and whether every acknowledged
  judgment ("saved #ID") is in the database;
- with --explorers N: N users running the CoT at once (gradio_client, each its own photo from --photos in turn, the
  model deciding whether to take the 3D route, as the app does by default) for --explore-seconds: first step shown and
  whole CoT, median and p95, CoTs/s, errors. Each user is its own process (a user's browser is not in the server's
  Python interpreter; before 2026-12-07 they were threads of this process, which shares the server's interpreter
  lock with their streaming and downloads: --clients-in-process measures that way);
      python -m benchmarks.bench_demo --seconds 0 --no-browser --explorers 4 --photos ../shared/outside-dev
Targets: first step <= 0.5 s, CoT with 3D <= 2 s, judgment <= 150 ms, no errors, nothing lost.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client, handle_file

from tests.demo.conftest import BoxExpert, free_port, make_dataset

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# One judgment in the page: press "1", wait until the note shows a new "saved #" and the photo of the next item is
# decoded; returns the milliseconds.
PAGE_JUDGE = """async () => {
  const note = () => document.querySelector('#note').innerText;
  const img = () => document.querySelector('#item-photo img');
  const before = note(), src = img() && img().src;
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent('keydown', {key: '1', bubbles: true}));
  while (true) {
    await new Promise(r => requestAnimationFrame(r));
    const i = img();
    if (note() !== before && note().includes('saved #') && i && i.src !== src && i.complete && i.naturalWidth > 0)
      return performance.now() - t0;
    if (performance.now() - t0 > 20000) throw new Error('no next item after 20 s: ' + note());
  }
}"""


def stats(ms: list[float]) -> str:
    ms = sorted(ms)
    return f"median {statistics.median(ms):.0f} ms, p95 {ms[max(0, int(0.95 * len(ms)) - 1)]:.0f} ms"


def judge_latency_api(url: str, name: str, n: int, **client_kwargs) -> list[float]:
    client = Client(url, verbose=False, **client_kwargs)
    out = client.predict(name, 2, api_name="/start")
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = client.predict(name, 2, "", out[7], api_name="/judge_A")  # out[7]: the item on screen
        latencies.append(1000 * (time.perf_counter() - t0))
        assert "saved #" in out[0] and out[2], out[:3]  # acknowledged, and the next item's photo came back
    return latencies


def judge_latency_browser(url: str, n: int) -> list[float] | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "playwright is not installed"
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Annotate").click()
        page.fill("#name input, #name textarea", "browser")
        page.click("#btn-start")
        page.wait_for_selector("#item-photo img", timeout=30000)
        page.locator("body").click(position={"x": 5, "y": 5})
        latencies = [page.evaluate(PAGE_JUDGE) for _ in range(n + 3)][3:]  # 3 warm-up judgments
        browser.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120, help="duration of the concurrent-annotator run "
                        "(0: skip it)")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="CoT runs to time")
    parser.add_argument("--judgments", type=int, default=40, help="judgments to time per way of measuring")
    parser.add_argument("--expert", default="learned", help="3D expert spec: learned[:WEIGHTS] (default, the "
                        "shipped weights), box (the tests' in-code box), oracle:DATA_DIR, ...")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    parser.add_argument("--explorers", type=int, default=0, help="users running the CoT at once (0: skip)")
    parser.add_argument("--explore-seconds", type=float, default=60, help="duration of the --explorers run")
    parser.add_argument("--clients-in-process", action="store_true", help="run the --explorers clients as threads "
                        "of the benchmark's own process, beside the server (as measured before 2026-12-07), instead "
                        "of one process per user")
    parser.add_argument("--photos", default=str(REPO / "demo" / "examples"), help="folder of photos the explorers "
                        "upload in turn (.jpg, .jpeg, .png; default: the app's examples)")
    args = parser.parse_args()
    photos = sorted(str(f) for f in Path(args.photos).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if Path(args.photos).is_dir() else []
    if args.explorers and not photos:
        raise SystemExit(f"error: --photos {args.photos}: no .jpg, .jpeg or .png photos there")

    from demo.app import serve
    from demo.studio import Studio, StudioConfig

    root = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    dataset = make_dataset(root / "dataset", n=3000)
    studio = Studio(StudioConfig(root / "data", expert=args.expert, dataset=dataset, overlap=2,
                                 experts={"box": BoxExpert()}))
    studio.model("default")
    expert, note = studio.expert(args.expert)
    if expert is None:
        raise SystemExit(f"error: {note}")
    app, url = serve(studio, port=free_port(), block=False, quiet=True)
    photo = str(REPO / "demo" / "examples" / "cellphone_occluded.jpg")
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
          f"model: {studio.model('default').describe()}; 3D expert: {args.expert} ({type(expert.inner).__name__})")

    # --- explore: first step on screen, whole CoT with 3D ---------------------------------------------
    client = Client(url, verbose=False, ssl_verify=False)
    firsts, totals, meshes = [], [], 0
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        job = client.submit(handle_file(photo), "default", args.expert, True, False, False, 1.0, 1.0, api_name="/explore")
        first = None
        for update in job:
            if first is None and "step-identify" in update[1]:
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        final = job.outputs()[-1]
        if i:  # the first run warms up caches
            firsts.append(first)
            totals.append(total)
            meshes += bool(final[3]) and "mesh ready" in final[1]
    print(f"explore ({args.expert} expert): first step shown {statistics.median(firsts):.3f} s (median of "
          f"{len(firsts)}; target <= 0.5), whole CoT with 3D {statistics.median(totals):.3f} s (target <= 2); "
          f"{meshes}/{len(totals)} runs showed a mesh")

    # --- one annotator: judgment stored + next item shown ---------------------------------------------
    if not args.no_browser:
        browser = judge_latency_browser(url, args.judgments)
        print("judgment stored + next item shown, browser (key press -> next photo on screen): " + (
            stats(browser) if isinstance(browser, list) else f"skipped: {browser}") + " (target <= 150)")
    print(f"judgment stored + next item returned, gradio_client (ssl_verify=False): "
          f"{stats(judge_latency_api(url, 'solo', args.judgments, ssl_verify=False))} (target <= 150)")
    print(f"judgment stored + next item returned, gradio_client with its defaults (a TLS context per request): "
          f"{stats(judge_latency_api(url, 'solo-default', args.judgments))}")

    # --- N annotators at once ------------------------------------------------------------------------
    if args.seconds > 0:
        concurrent(url, studio, args.annotators, args.seconds)

    # --- N users running the CoT at once -----------------------------------------------------------------
    if args.explorers > 0:
        concurrent_explore(url, args.explorers, args.explore_seconds, photos, args.expert, args.clients_in_process)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    app.close()


def run_at_once(work, names: list) -> float:
    """work(name) for every name, each in its own thread, all at once; returns the seconds until the last ended."""
    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def concurrent(url: str, studio, annotators: int, seconds: float) -> None:
    acked: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def annotate(name: str) -> None:
        try:
            c = Client(url, verbose=False)
            out = c.predict(name, 2, api_name="/start")
            choices = ["A", "B", "tie", "both_bad", "skip"]
            k = 0
            while time.perf_counter() < stop:
                choice = choices[k % len(choices)]
                out = c.predict(name, 2, "The object is jar." if choice == "both_bad" else "", out[7],
                                api_name=f"/judge_{choice}")
                found = re.search(r"saved #(\d+)", out[0])
                with lock:
                    (acked.append(int(found.group(1))) if found else errors.append(f"{name}: {out[0][:200]}"))
                k += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"{name}: {type(e).__name__}: {e}")

    elapsed = run_at_once(annotate, [f"annotator{i}" for i in range(annotators)])
    stored = studio.store.judgment_ids()
    lost = [i for i in acked if i not in stored]
    print(f"{annotators} annotators for {elapsed:.0f} s: {len(acked)} judgments ({len(acked) / elapsed:.1f}/s), "
          f"{len(errors)} errors, {len(lost)} acknowledged judgments missing from the database")
    for e in errors[:5]:
        print("  error:", e)


def explore_user(url: str, k: int, seconds: float, photos: list[str], expert: str, barrier=None) -> dict:
    """One user running the CoT on the photos in turn (from their own offset `k`) for `seconds` after `barrier` (all
    users start together); returns their first-step and whole-CoT milliseconds, errors, and the runs routed to 3D."""
    out = {"firsts": [], "totals": [], "errors": [], "routed": 0}
    try:
        c = Client(url, verbose=False, ssl_verify=False)
        if barrier is not None:
            barrier.wait()
        stop = time.perf_counter() + seconds
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            job = c.submit(handle_file(photos[i % len(photos)]), "default", expert, False, False, False, 1.0, 1.0,
                           api_name="/explore")
            first = None
            for update in job:
                if first is None and "step-identify" in update[1]:
                    first = 1000 * (time.perf_counter() - t0)
            total = 1000 * (time.perf_counter() - t0)
            final = job.outputs()[-1]
            if first is None or "final-answer" not in final[2]:
                out["errors"].append(f"user{k}: {re.sub('<[^>]+>', ' ', final[0] + final[2])[:200]}")
            else:
                out["firsts"].append(first)
                out["totals"].append(total)
                out["routed"] += "step-reconstruct" in final[1]
            i += 1
    except Exception as e:  # noqa: BLE001
        out["errors"].append(f"user{k}: {type(e).__name__}: {e}")
    return out


def _explore_process(queue, *args) -> None:
    queue.put(explore_user(*args))


def concurrent_explore(url: str, users: int, seconds: float, photos: list[str], expert: str,
                       in_process: bool = False) -> None:
    """`users` clients each running the CoT on the photos in turn (their own offset) for `seconds`, all starting
    together; prints the first step shown and the whole CoT, median and p95, and how many runs took the 3D route.
    Each user is its own process, as each user's browser is its own program (gradio_client's streaming and downloads
    then do not take the server's interpreter lock); `in_process`: threads of this process, as before 2026-12-07."""
    if in_process:
        results: list[dict] = [{}] * users

        def work(k: int) -> None:
            results[k] = explore_user(url, k, seconds, photos, expert)

        elapsed = run_at_once(work, list(range(users)))
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        queue, barrier = ctx.Queue(), ctx.Barrier(users + 1)
        processes = [ctx.Process(target=_explore_process, args=(queue, url, k, seconds, photos, expert, barrier),
                                 daemon=True) for k in range(users)]
        for process in processes:
            process.start()
        barrier.wait(timeout=120)  # every user connected: the clock starts for all of them at once
        t0 = time.perf_counter()
        results = [queue.get(timeout=seconds + 600) for _ in processes]
        elapsed = time.perf_counter() - t0
        for process in processes:
            process.join(timeout=30)
    firsts = [ms for r in results for ms in r["firsts"]]
    totals = [ms for r in results for ms in r["totals"]]
    errors = [e for r in results for e in r["errors"]]
    routed = sum(r["routed"] for r in results)
    where = "threads of the benchmark's process" if in_process else "each its own process"
    if totals:
        print(f"{users} users running the CoT at once for {elapsed:.0f} s ({where}; {len(photos)} photos, the model "
              f"deciding; 3D taken in {routed} of {len(totals)}): first step shown {stats(firsts)}; whole CoT "
              f"{stats(totals)}; {len(totals) / elapsed:.2f} CoTs/s; {len(errors)} errors")
    else:
        print(f"{users} users running the CoT at once: no run finished; {len(errors)} errors")
    for e in errors[:5]:
        print("  error:", e)


if __name__ == "__main__":
    main()
