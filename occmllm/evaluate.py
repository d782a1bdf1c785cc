"""Evaluate a model on a test set the seed's way: ACC1, ACC6, 3D plus, Decision, per class / visible fraction.

    python -m occmllm.evaluate --data DIR/test_Q1.jsonl --images DIR/test/images [--model PATH] \\
        [--expert learned | --renders MOHO_DIR] [--out runs/evaluate] [--batch-size 32] [--limit N] [--describe]

Phases, each batched (left padding) with a progress bar: Q1 on every photo; Q6 as the second turn of the same
conversation; reconstruction + Q1 on the render (a new conversation) for the images answered "No" and the images
whose Q1 answer is wrong (so that "3D plus" is measured as defined); optionally the attribute questions. The metric
definitions are in occmllm/metrics.py. `--renders DIR` reads precomputed renders named as the seed's MOHO outputs
(`{id}_0_obman_test_rgb_{id}.jpg.png`). `--fuse`: every photo also goes through the expert, and a second Decision is
reported where the answer is the class that the photo and the render support together (the model's Q1 class
probabilities on both, multiplied; `occmllm.pipeline.run_cot(fuse=True)`). Per-image visible fractions come from
DIR/../manifest.parquet when present (the synthetic dataset's layout).

Writes to --out: predictions.json (the seed's {id: final answer text}; "" where the render was needed but missing,
which counts as wrong), results.jsonl (per image: raw answers answer_q1 / answer_q6 / answer_render, parsed q1 / clarity / render_answer / final), report.json (all metrics).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from occmllm import metrics, prompts
from occmllm.dataset import manifest_rows
from occmllm.images import ImageError, load_image
from occmllm.shipped import LEARNED_HELP


@dataclass
class TestItem:
    id: str
    image: Path
    label: str


def read_test_set(data: str | Path, images: str | Path) -> list[TestItem]:
    """Test items from a seed-format JSONL (Q1, Q1_Q6 ...): the label is the class of the first answer."""
    from occmllm.formats import read_conversations

    items = []
    for conv in read_conversations(data):
        answers = conv.turns("gpt")
        label = prompts.parse_object(answers[0]) if answers else prompts.UNPARSED
        if label == prompts.UNPARSED or not conv.images:
            raise ValueError(f"{data}: record {conv.id}: no image or no readable class in {answers[:1]}")
        image = Path(images) / conv.images[0]
        items.append(TestItem(conv.id or image.stem, image, label))
    return items


@functools.cache
def _io_pool():
    """Threads for image decoding and file reads (PIL and file I/O let go of the GIL), started on first use."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(8, thread_name_prefix="evaluate-io")


def thread_map(fn, sequence) -> list:
    """list(map(fn, sequence)) in the shared I/O threads: image decoding, file reads (also train/run_all's)."""
    return list(_io_pool().map(fn, sequence))


def _batches(sequence, size):
    for start in range(0, len(sequence), size):
        yield sequence[start:start + size]


def evaluate(vlm, items: list[TestItem], expert=None, batch_size: int = 32, describe: bool = False,
             manifest: dict | None = None, progress: bool = True, fuse: bool = False):
    """(list of metrics.ImageResult, list of per-image raw-answer dicts). Unreadable images count as wrong.
    fuse: reconstruct every photo and record in each raw dict "fused", the class photo and render support together
    (the photo's own Q1 class where nothing was reconstructed)."""
    manifest = manifest or {}
    raw = {item.id: {"id": item.id, "image": str(item.image), "label": item.label} for item in items}
    photos: dict[str, Image.Image | None] = {}
    def read(item):
        try:
            return load_image(item.image)
        except ImageError as error:
            return error

    bar = tqdm(total=len(items), desc="Q1+Q6", disable=not progress, unit="img")
    for batch in _batches(items, batch_size):
        loaded = []
        for item, image in zip(batch, thread_map(read, batch)):  # photos decoded in threads
            if isinstance(image, ImageError):
                raw[item.id].update(error=str(image), answer_q1="", answer_q6="")
            else:
                loaded.append((item, image))
        if loaded:
            images = [image for _, image in loaded]
            q1 = vlm.generate_batch(images, [prompts.Q1] * len(images))
            q6 = vlm.generate_batch(images, [prompts.Q6] * len(images), histories=[[(prompts.Q1, a)] for a in q1])
            for (item, image), a1, a6 in zip(loaded, q1, q6):
                raw[item.id].update(answer_q1=a1, answer_q6=a6)
                if describe:
                    photos[item.id] = image
        bar.update(len(batch))
    bar.close()

    def parsed(item):
        return prompts.parse_object(raw[item.id]["answer_q1"]), prompts.parse_yes_no(raw[item.id]["answer_q6"])

    need = [item for item in items if "error" not in raw[item.id]
            and (fuse or parsed(item)[1] == prompts.NO or parsed(item)[0] != item.label)]
    fuse_renders: dict[str, Image.Image] = {}
    need_ids = {item.id for item in need}
    bar = tqdm(total=len(need), desc="3D + Q1 on render", disable=not progress or not need, unit="img")
    # precomputed renders (FolderExpert) are read in threads; experts that render (a GL context) one at a time
    reconstruct_all = thread_map if getattr(expert, "thread_safe", False) else map
    for batch in _batches(need, batch_size):
        renders = []
        reconstructions = reconstruct_all(lambda item: expert.reconstruct(str(item.image)), batch) if expert else ()
        for item, reconstruction in itertools.zip_longest(batch, reconstructions):
            if expert is None:
                raw[item.id]["render"] = "no 3D expert"
                continue
            if reconstruction.ok:
                renders.append((item, Image.fromarray(np.asarray(reconstruction.render, dtype=np.uint8))))
                if fuse:
                    fuse_renders[item.id] = renders[-1][1]
            else:
                raw[item.id]["render"] = reconstruction.message
        if renders:
            answers = vlm.generate_batch([r for _, r in renders], [prompts.Q1] * len(renders))
            for (item, _), answer in zip(renders, answers):
                raw[item.id]["answer_render"] = answer
        bar.update(len(batch))
    bar.close()

    if fuse:
        from occmllm.pipeline import fuse_posteriors

        fused_items = [item for item in need if item.id in fuse_renders]
        for item in need:
            raw[item.id]["fused"] = parsed(item)[0]  # nothing reconstructed: the photo's answer stands
        bar = tqdm(total=len(fused_items), desc="photo + render fused", disable=not progress or not fused_items,
                   unit="img")
        for batch in _batches(fused_items, max(1, batch_size // 8)):  # 8 class answers scored per image
            photo_p = vlm.class_posterior([load_image(item.image) for item in batch])
            render_p = vlm.class_posterior([fuse_renders[item.id] for item in batch])
            for item, p, r in zip(batch, photo_p, render_p):
                raw[item.id]["fused"] = prompts.CLASSES[fuse_posteriors(p, r)]
            bar.update(len(batch))
        bar.close()

    if describe:
        attribute_items = [item for item in items if item.id in photos]
        for name, question in prompts.ATTRIBUTE_QUESTIONS.items():
            for batch in _batches(attribute_items, batch_size):
                answers = vlm.generate_batch([photos[item.id] for item in batch], [question] * len(batch))
                for item, answer in zip(batch, answers):
                    raw[item.id][f"answer_{name}"] = answer

    results = []
    for item in items:
        record, row = raw[item.id], manifest.get(item.id, {})
        q1, clarity = parsed(item) if "error" not in record else (prompts.UNPARSED, prompts.UNPARSED)
        needed = item.id in need_ids or clarity == prompts.NO
        attributes = {name: (prompts.parse_yes_no(record[f"answer_{name}"]), bool(row[name]))
                      for name in prompts.ATTRIBUTES if f"answer_{name}" in record and name in row}
        fraction = row.get("visible_fraction")
        results.append(metrics.ImageResult(
            id=item.id, label=item.label, q1=q1, clarity=clarity,
            render_answer=prompts.parse_object(record["answer_render"]) if "answer_render" in record else None,
            render_missing=needed and "answer_render" not in record, attributes=attributes,
            visible_fraction=None if fraction is None else float(fraction),
            q1_text=record.get("answer_q1", ""), clarity_text=record.get("answer_q6", ""),
            render_text=record.get("answer_render"),
        ))
    return results, [raw[item.id] for item in items]


def fused_summary(results: list[metrics.ImageResult], records: list[dict]) -> dict:
    """Decision with photo and render fused (records' "fused"; unreadable photos count as wrong), overall and per
    visible-fraction bucket (metrics.BUCKETS). Beside it, from the same readings of every photo: "render_every_photo",
    the Decision of always answering from the render (the routing of --force-3d; a missing render is wrong), and
    "best_routing", the share right on the photo or on the render (what the best possible clarity answer would get)."""
    def score(pairs):
        return {"n": len(pairs), "decision": sum(r.label == rec.get("fused") for r, rec in pairs) / len(pairs)
                if pairs else None}

    pairs = list(zip(results, records))
    other = {"render_every_photo": sum(r.render_answer == r.label for r in results) / len(results) if results else None,
             "best_routing": sum(r.q1 == r.label or r.render_answer == r.label for r in results) / len(results)
             if results else None}
    with_fraction = [(r, rec) for r, rec in pairs if r.visible_fraction is not None]
    hidden = [(r, rec) for r, rec in with_fraction if r.visible_fraction < metrics.HIDDEN_BELOW]
    return {**score(pairs), **other, "visible_under_40": {**score(hidden), "decision_seed_rule": metrics.decision(
        [r for r, _ in hidden]) if hidden else None}, "per_visible_fraction": {
        metrics.bucket_name(low, high): score([(r, rec) for r, rec in with_fraction if low <= r.visible_fraction < high])
        for low, high in (metrics.BUCKETS if with_fraction else ())}}


def final_text(result: metrics.ImageResult, record: dict) -> str:
    """The seed's prediction text: the render's answer when routed to 3D ("" without a render), Q1's when the clarity
    answer is yes, "" when it is neither (the seed leaves such images out of its final predictions)."""
    if result.clarity == prompts.NO:
        return record.get("answer_render", "")
    return record.get("answer_q1", "") if result.clarity == prompts.YES else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m occmllm.evaluate", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", required=True, help="test JSONL in the seed's format (e.g. DIR/test_Q1.jsonl)")
    parser.add_argument("--images", required=True, help="folder the JSONL's image paths are relative to")
    parser.add_argument("--model", help="model folder (default: the embedded default model)")
    parser.add_argument("--expert", default="none", help=f"3D expert: none (default) | {LEARNED_HELP} | "
                        "oracle:DATA_DIR[:SPLIT]")
    parser.add_argument("--renders", help="folder of precomputed renders ({id}_0_obman_test_rgb_{id}.jpg.png)")
    parser.add_argument("--out", default="runs/evaluate", help="output folder (default: runs/evaluate)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--describe", action="store_true", help="also ask round / thin / long (needs a manifest)")
    parser.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    parser.add_argument("--fuse", action="store_true", help="also reconstruct every photo and report the Decision of "
                        "photo and render read together (needs --expert or --renders)")
    args = parser.parse_args(argv)
    if args.fuse and args.expert == "none" and not args.renders:
        parser.error("--fuse needs a 3D expert: --expert learned (or --renders DIR)")

    from occmllm.formats import FormatError, write_predictions
    from occmllm.recon import expert_from_spec
    from occmllm.vlm import VLM, ModelLoadError

    try:
        items = read_test_set(args.data, args.images)[: args.limit]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vlm = VLM.load_named(args.model, device=args.device)
        if args.renders:
            from occmllm.recon import FolderExpert

            expert = FolderExpert(args.renders)
        else:
            expert = expert_from_spec(args.expert)
    except (FormatError, ModelLoadError, ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {vlm.describe()}\ndata: {args.data} ({len(items)} images)", file=sys.stderr)
    manifest = manifest_rows(Path(args.images).parent)
    start = time.perf_counter()
    results, records = evaluate(vlm, items, expert=expert, batch_size=args.batch_size, describe=args.describe,
                                manifest=manifest, fuse=args.fuse)
    seconds = time.perf_counter() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / "predictions.json", {r.id: final_text(r, rec) for r, rec in zip(results, records)})
    with open(out / "results.jsonl", "w") as handle:
        for result, record in zip(results, records):
            handle.write(json.dumps({**record, **metrics.to_dict(result)}, ensure_ascii=False) + "\n")
    report = {
        "model": vlm.name, "model_trained": vlm.trained, "data": str(args.data), "images": len(items),
        "expert": "renders:" + args.renders if args.renders else args.expert, "seconds": seconds,
        "images_per_second": len(items) / seconds if seconds else None, "batch_size": args.batch_size,
        "manifest": bool(manifest), "definitions": metrics.__doc__, **metrics.summary(results),
    }
    if args.fuse:
        report["fused"] = fused_summary(results, records)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"ACC1 {fmt(report['acc1'])}  ACC6 {fmt(report['acc6'])}  3D plus {fmt(report['3d_plus'])}  "
          f"Decision {fmt(report['decision'])}  ({len(items)} images, {seconds:.1f} s)")
    if report.get("strict"):
        exact = report["strict"]
        print(f"exact strings, as the seed's code compares them: ACC1 {fmt(exact['acc1'])}  ACC6 {fmt(exact['acc6'])}  "
              f"3D plus {fmt(exact['3d_plus'])}  Decision {fmt(exact['decision'])}  (clarity answers neither yes nor no: "
              f"{exact['clarity_neither_yes_nor_no']})")
    if args.fuse:
        fused = report["fused"]
        buckets = "  ".join(f"{name} {fmt(row['decision'])} ({row['n']})" for name, row in fused["per_visible_fraction"].items())
        hidden = fused["visible_under_40"]
        print(f"photo + render fused: Decision {fmt(fused['decision'])} (seed's rule {fmt(report['decision'])})"
              + (f"; visible < 40%: {fmt(hidden['decision'])} (seed's rule {fmt(hidden['decision_seed_rule'])}, "
                 f"{hidden['n']} images)" if hidden["n"] else "")
              + (f"; by visible fraction: {buckets}" if buckets else ""))
        print(f"the same readings routed otherwise: the render for every photo {fmt(fused['render_every_photo'])}, "
              f"the best routing (photo or render right) {fmt(fused['best_routing'])}")
    if not vlm.trained:
        print("WARNING: the default model is untrained (random weights): these numbers mean nothing yet.")
    print(f"wrote {out}/predictions.json, results.jsonl, report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
