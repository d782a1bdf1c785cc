"""How the studio does on photos it did not make: the CoT as the app runs it, on a folder of labelled photos.

    python -m benchmarks.bench_outside ../shared/outside-dev
    python -m benchmarks.bench_outside FOLDER --model PATH --expert learned:v5 --fuse

FOLDER holds the photos and a `labels.json` mapping each file name to the classes that count as a right answer
(`{"photo.png": ["bottle"], ...}`, the layout of ../shared/outside-dev). Each photo runs through
`occmllm.pipeline.run_cot` with the app's settings (default model, the `learned` 3D expert, greedy decoding, class
probabilities on); the script prints every photo's steps (first answer, clarity answer, 3D or not, final answer, the
three most probable classes), then the accuracy of the final answer and of the first answer, and the confusion of
the final answers (rows: the first class listed as right; columns: the answer).

A benchmark, not a test: these photos are for measurement only. Never train on them and never tune a threshold on
them (a larger hidden set of real photos checks the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from pathlib import Path


def read_labels(folder: Path) -> dict[str, list[str]]:
    """{file name: [classes that count as right]} from FOLDER/labels.json, every file checked to exist."""
    from occmllm import prompts

    path = folder / "labels.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (a JSON object: photo file name -> list of right classes)")
    labels = json.loads(path.read_text())
    if not isinstance(labels, dict) or not labels:
        raise SystemExit(f"error: {path}: expected a non-empty JSON object of file name -> list of classes")
    for name, right in labels.items():
        right = [right] if isinstance(right, str) else right
        unknown = [c for c in right if c not in prompts.CLASSES]
        if unknown:
            raise SystemExit(f"error: {path}: {name}: unknown classes {unknown} (known: {', '.join(prompts.CLASSES)})")
        if not (folder / name).is_file():
            raise SystemExit(f"error: {path}: {name}: no such photo in {folder}")
        labels[name] = list(right)
    return labels


def confusion_table(rows: list[tuple[str, str]], classes: list[str]) -> str:
    """Text table of (truth, answer) counts; answers outside `classes` go to their own columns."""
    counts = Counter(rows)
    truths = [c for c in classes if any(t == c for t, _ in rows)]
    answers = [c for c in classes if any(a == c for _, a in rows)]
    answers += sorted({a for _, a in rows} - set(answers))
    width = max([len(a) for a in answers + truths] + [5]) + 1
    lines = ["truth \\ answer".ljust(16) + "".join(a.rjust(width) for a in answers)]
    for truth in truths:
        lines.append(truth.ljust(16) + "".join(str(counts[(truth, a)] or ".").rjust(width) for a in answers))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_outside",
                                     description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="photos + labels.json")
    parser.add_argument("--model", help="model folder (default: the shipped default model)")
    parser.add_argument("--expert", default=None, help="3D expert, as in the app (default: the one the model was "
                        "trained with, recorded in its folder, else learned)")
    parser.add_argument("--fuse", action="store_true", help="decide by photo and render together (app checkbox)")
    parser.add_argument("--force-3d", action="store_true", help="read every photo through its 3D render too")
    parser.add_argument("--json", type=Path, help="also write every trace and the figures to this JSON file")
    args = parser.parse_args(argv)

    from occmllm import prompts
    from occmllm.pipeline import cot
    from occmllm.recon import expert_from_spec
    from occmllm.vlm import VLM

    labels = read_labels(args.folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = VLM.load_named(args.model)
    from occmllm.expert_renders import expert_for_model

    note = None
    if args.expert is None:
        args.expert, note = expert_for_model(args.model)
    expert = expert_from_spec(args.expert)
    print(f"model: {vlm.describe()}\n3D expert: {args.expert}{f' ({note})' if note else ''}  fuse: {args.fuse}  force 3D: {args.force_3d}\n")
    right_final = right_first = routed = 0
    pairs, traces = [], []
    for name, right in labels.items():
        trace = cot(vlm, str(args.folder / name), expert=expert, force_3d=args.force_3d, fuse=args.fuse,
                    probabilities=True)
        first, clarity = trace.step("identify"), trace.step("reflect")
        top = sorted(first.info["classes"].items(), key=lambda kv: -kv[1])[:3]
        ok = trace.final in right
        right_final += ok
        right_first += first.parsed in right
        routed += trace.required_3d
        pairs.append((right[0], trace.final or prompts.UNPARSED))
        render = trace.step("identify_3d")
        print(f"{name}: right {'/'.join(right)} | first {first.parsed} ({', '.join(f'{c} {p:.2f}' for c, p in top)}) "
              f"| clear? {clarity.raw!r} | 3D {'-> ' + str(render.parsed) if render else ('required, no render' if trace.required_3d else 'no')} "
              f"| final {trace.final} {'RIGHT' if ok else 'wrong'} | {trace.seconds * 1000:.0f} ms")
        traces.append(json.loads(trace.to_json()))
    n = len(labels)
    print(f"\nfinal answer right: {right_final} of {n} ({right_final / n:.3f}); first answer right: {right_first} of {n}; "
          f"routed to 3D: {routed} of {n}\n")
    print(confusion_table(pairs, list(prompts.CLASSES)))
    if args.json:
        args.json.write_text(json.dumps({"right": right_final, "n": n, "first_right": right_first, "routed": routed,
                                         "model": vlm.describe(), "expert": args.expert, "traces": traces}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
