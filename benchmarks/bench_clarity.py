"""Does the model know when it is wrong? How well two signals tell its right Q1 answers from its wrong ones (ROC AUC):

- P(clear): the probability it gives "Yes." against "No." as the clarity answer (Q6, after its own Q1 answer), the
  seed's self-assessment, which decides whether the 3D route is taken;
- confidence: the largest of its eight Q1 class probabilities on the photo (`VLM.class_posterior`);
- log-probability: of its own greedy Q1 answer (`generate_batch(with_logprobs=True)`), what `clarity.rule: route`
  in train/run_all.py labels the clarity answers by.

    python -m benchmarks.bench_clarity --data /tmp/loc --split train --limit 600

AUC 0.5 = no better than chance; 1.0 = every wrong answer scores below every right one. Use photos the model never
trained on (e.g. another seed's dataset).

Where the split has the 3D expert's renders (DIR/SPLIT/expert_renders/{id}.png, from data_tools.expert_renders), the
model also answers Q1 on each render, and for each signal the script prints the Decision of routing to the render
the photos whose signal is below a threshold: at the threshold best on these photos, and at thresholds chosen
elsewhere (`--thresholds P,C,L`, one per signal in the order above, e.g. the best ones printed for the training
photos, applied to test photos):

    python -m benchmarks.bench_clarity --data /tmp/loc --split train --limit 600
    python -m benchmarks.bench_clarity --data /tmp/loc --split test --limit 0 --thresholds 0.49,0.9,-0.1

Beside the model's signals, where the manifest has it: the generator's visible fraction, which no model sees (the
labels `clarity.relabel: false` teaches: "No." below a visible fraction): the best Decision of routing by it is what a
clarity answer that learnt those labels perfectly could reach.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import rankdata


def auc(right: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of `score` for telling right (True) from wrong answers (Mann-Whitney U over the ranks)."""
    right = np.asarray(right, bool)
    ranks = rankdata(score)
    n_right, n_wrong = int(right.sum()), int((~right).sum())
    if not n_right or not n_wrong:
        return float("nan")
    return float((ranks[right].sum() - n_right * (n_right + 1) / 2) / (n_right * n_wrong))


def best_threshold(score: np.ndarray, photo_right: np.ndarray, render_right: np.ndarray) -> tuple[float, float]:
    """(threshold, Decision) of routing the photos with score < threshold to the render, best over every cut."""
    order = np.argsort(score)
    s, p, r = score[order], photo_right[order].astype(float), render_right[order].astype(float)
    # routing the first k photos: right = sum(r[:k]) + sum(p[k:]); k = 0..n, cut between distinct scores only
    right = np.concatenate([[0.0], np.cumsum(r)]) + np.concatenate([np.cumsum(p[::-1])[::-1], [0.0]])
    cuts = np.concatenate([[s[0] - 1], (s[:-1] + s[1:]) / 2, [s[-1] + 1]])
    valid = np.concatenate([[True], s[:-1] < s[1:], [True]])
    k = int(np.argmax(np.where(valid, right, -1)))
    return float(cuts[k]), float(right[k] / len(s))


def decision_at(threshold: float, score: np.ndarray, photo_right: np.ndarray, render_right: np.ndarray) -> float:
    return float(np.where(score < threshold, render_right, photo_right).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_clarity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (data_tools.synth layout)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=600, help="first N photos of {split}_Q1.jsonl")
    parser.add_argument("--model", default=None, help="VLM folder (default: the shipped default model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--thresholds", default=None, help="P,C,L: route below these (P(clear), confidence, "
                        "log-probability), chosen on other photos")
    args = parser.parse_args(argv)
    fixed = [float(x) for x in args.thresholds.split(",")] if args.thresholds else None
    if fixed is not None and len(fixed) != 3:
        parser.error("--thresholds takes three numbers: P(clear),confidence,log-probability")

    from tqdm import tqdm

    from occmllm import formats, prompts
    from occmllm.dataset import kind_folder, manifest_rows
    from occmllm.images import load_image
    from occmllm.vlm import VLM

    vlm = VLM.load_named(args.model)
    convs = formats.read_conversations(args.data / f"{args.split}_Q1.jsonl")
    convs = convs[: args.limit] if args.limit else convs
    renders = args.data / args.split / "expert_renders"
    with_renders = all((renders / f"{c.id}.png").is_file() for c in convs)
    rows = manifest_rows(args.data / args.split)
    visible = np.array([rows.get(c.id, {}).get("visible_fraction", np.nan) for c in convs], float)
    right, clear, confidence, logprob, render_right = [], [], [], [], []
    for start in tqdm(range(0, len(convs), args.batch_size), desc="photos", unit="batch"):
        batch = convs[start:start + args.batch_size]
        images = [load_image(kind_folder(args.data, args.split, "images") / c.images[0]) for c in batch]
        answers, scores = vlm.generate_batch(images, [prompts.Q1] * len(images), with_logprobs=True)
        logprob.extend(scores.tolist())
        posterior = vlm.class_posterior(images)
        clear.extend(vlm.clear_probability(images, [[(prompts.Q1, a)] for a in answers]).tolist())
        truths = [prompts.parse_object(c.conversations[1]["value"]) for c in batch]
        for truth, answer, p in zip(truths, answers, posterior):
            right.append(prompts.parse_object(answer) == truth)
            confidence.append(float(p.max()))
        if with_renders:
            on_render = vlm.generate_batch([load_image(renders / f"{c.id}.png") for c in batch],
                                           [prompts.Q1] * len(batch))
            render_right.extend(prompts.parse_object(a) == t for a, t in zip(on_render, truths))
    right, clear, confidence, logprob, render_right = map(np.array, (right, clear, confidence, logprob, render_right))
    print(f"{len(right)} photos of {args.data}/{args.split}, Q1 right on {right.mean():.3f}")
    for name, score in (("P(clear), the clarity answer", clear), ("confidence, max class probability", confidence),
                        ("log-probability of its Q1 answer", logprob)):
        q = np.percentile(score, [0, 25, 50, 75, 100])
        print(f"{name:<36} AUC {auc(right, score):.3f}   min / quartiles / max {' / '.join(f'{v:.3f}' for v in q)}")
    if not with_renders:
        print(f"(no expert renders in {renders} for every photo: no routing figures; make them with "
              f"`python -m data_tools.expert_renders --data {args.data} --split {args.split}`)")
        return
    print(f"\nDecision with the expert's renders ({renders}): photo only {right.mean():.4f}, render for every photo "
          f"{render_right.mean():.4f}, the best possible routing {np.maximum(right, render_right).mean():.4f}, "
          f"the clarity answer as greedy decoding reads it (P(clear) < 0.5) "
          f"{decision_at(0.5, clear, right, render_right):.4f} (routes {(clear < 0.5).mean():.2f})")
    for i, (name, score) in enumerate((("P(clear)", clear), ("confidence", confidence), ("log-probability", logprob))):
        threshold, best = best_threshold(score, right, render_right)
        line = f"route below a threshold of {name:<16} best here {threshold:.4g}: {best:.4f} (routes {(score < threshold).mean():.2f})"
        if fixed is not None:
            line += (f"; at {fixed[i]:.4g}: {decision_at(fixed[i], score, right, render_right):.4f} "
                     f"(routes {(score < fixed[i]).mean():.2f})")
        print(line)
    if not np.isnan(visible).any():
        threshold, best = best_threshold(visible, right, render_right)
        print(f"route below a visible fraction (the generator's truth, no model's signal) best here {threshold:.3f}: "
              f"{best:.4f} (routes {(visible < threshold).mean():.2f}); below 0.4: "
              f"{decision_at(0.4, visible, right, render_right):.4f} (routes {(visible < 0.4).mean():.2f})")


if __name__ == "__main__":
    main()
