"""Benchmark of the app, through gradio_client against a live server (the embedded default model on CPU).

    python -m tests.benchmarks.bench_demo                 # 2 minutes of 8 concurrent annotators
    python -m tests.benchmarks.bench_demo --seconds 20 --expert learned

Prints: time from Run to the first step on screen, the whole CoT with 3D (forced), a judgment stored + next item
shown (median and p95), and for N annotators at once: judgments/s, errors, and whether every acknowledged judgment
("saved #ID") is in the database. Targets: first step <= 0.5 s, CoT with 3D <= 2 s, judgment <= 150 ms, no errors,
nothing lost. The 3D expert is the in-code box expert of the tests unless --expert names a real one.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client, handle_file

from tests.demo.conftest import BoxExpert, free_port, make_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120, help="duration of the concurrent-annotator run")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="CoT runs to time")
    parser.add_argument("--expert", default="box", help="3D expert spec (default: the tests' in-code box expert)")
    args = parser.parse_args()

    from demo.app import serve
    from demo.studio import Studio, StudioConfig

    root = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    dataset = make_dataset(root / "dataset", n=3000)
    studio = Studio(StudioConfig(root / "data", expert=args.expert, dataset=dataset, overlap=2,
                                 experts={"box": BoxExpert()}))
    studio.model("default")
    app, url = serve(studio, port=free_port(), block=False, quiet=True)
    photo = str(Path(__file__).resolve().parents[2] / "demo" / "examples" / "cellphone_occluded.jpg")

    # --- explore: first step on screen, whole CoT with 3D ---------------------------------------------
    client = Client(url, verbose=False)
    firsts, totals = [], []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        job = client.submit(handle_file(photo), "default", args.expert, True, False, False, 1.0, 1.0, api_name="/explore")
        first = None
        for update in job:
            if first is None and "step-identify" in update[1]:
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        if i:  # the first run warms up caches
            firsts.append(first)
            totals.append(total)
    print(f"explore: first step shown {statistics.median(firsts):.3f} s (median of {len(firsts)}; target <= 0.5), "
          f"whole CoT with 3D {statistics.median(totals):.3f} s (target <= 2)")

    # --- one annotator: judgment stored + next item shown ---------------------------------------------
    client.predict("solo", 2, api_name="/start")
    latencies = []
    for _ in range(40):
        t0 = time.perf_counter()
        out = client.predict("solo", 2, "", api_name="/judge_A")
        latencies.append(time.perf_counter() - t0)
        assert "saved #" in out[0], out[0]
    latencies.sort()
    print(f"judgment stored + next item: median {1000 * statistics.median(latencies):.0f} ms, "
          f"p95 {1000 * latencies[int(0.95 * len(latencies)) - 1]:.0f} ms (target <= 150)")

    # --- N annotators at once ------------------------------------------------------------------------
    acked: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + args.seconds

    def annotate(name: str) -> None:
        try:
            c = Client(url, verbose=False)
            c.predict(name, 2, api_name="/start")
            choices = ["A", "B", "tie", "both_bad", "skip"]
            k = 0
            while time.perf_counter() < stop:
                choice = choices[k % len(choices)]
                out = c.predict(name, 2, "The object is jar." if choice == "both_bad" else "", api_name=f"/judge_{choice}")
                found = re.search(r"saved #(\d+)", out[0])
                with lock:
                    (acked.append(int(found.group(1))) if found else errors.append(f"{name}: {out[0][:200]}"))
                k += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=annotate, args=(f"annotator{i}",)) for i in range(args.annotators)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    stored = studio.store.judgment_ids()
    lost = [i for i in acked if i not in stored]
    print(f"{args.annotators} annotators for {elapsed:.0f} s: {len(acked)} judgments ({len(acked) / elapsed:.1f}/s), "
          f"{len(errors)} errors, {len(lost)} acknowledged judgments missing from the database")
    for e in errors[:5]:
        print("  error:", e)
    app.close()


if __name__ == "__main__":
    main()
