"""Does the model know when it is wrong? How well two signals tell its right Q1 answers from its wrong ones (ROC AUC):

- P(clear): the probability it gives "Yes." against "No." as the clarity answer (Q6, after its own Q1 answer), the
  seed's self-assessment, which decides whether the 3D route is taken;
- confidence: the largest of its eight Q1 class probabilities on the photo (`VLM.class_posterior`);
- log-probability: of its own greedy Q1 answer (`generate_batch(with_logprobs=True)`), what `clarity.rule: route`
  in train/run_all.py labels the clarity answers by.

    python -m tests.benchmarks.bench_clarity --data /tmp/loc --split train --limit 600

AUC 0.5 = no better than chance; 1.0 = every wrong answer scores below every right one. Use photos the model never
trained on (e.g. another seed's dataset).
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


def p_clear(vlm, images: list, q1_answers: list[str]) -> np.ndarray:
    """P("Yes.") / (P("Yes.") + P("No.")) as the Q6 reply after each photo's Q1 turn (VLM.answer_logprobs)."""
    from occmllm import prompts

    scores = vlm.answer_logprobs(images, prompts.Q6, [prompts.clarity_answer(True), prompts.clarity_answer(False)],
                                 histories=[[(prompts.Q1, a)] for a in q1_answers])
    return 1 / (1 + np.exp(scores[:, 1] - scores[:, 0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_clarity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (data_tools.synth layout)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=600, help="first N photos of {split}_Q1.jsonl")
    parser.add_argument("--model", default=None, help="VLM folder (default: the shipped default model)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from occmllm import formats, prompts
    from occmllm.images import load_image
    from occmllm.vlm import VLM

    vlm = VLM.load(args.model) if args.model else VLM.load_default()
    convs = formats.read_conversations(args.data / f"{args.split}_Q1.jsonl")[: args.limit]
    right, clear, confidence, logprob = [], [], [], []
    for start in tqdm(range(0, len(convs), args.batch_size), desc="photos", unit="batch"):
        batch = convs[start:start + args.batch_size]
        images = [load_image(args.data / args.split / "images" / c.images[0]) for c in batch]
        answers, scores = vlm.generate_batch(images, [prompts.Q1] * len(images), with_logprobs=True)
        logprob.extend(scores.tolist())
        posterior = vlm.class_posterior(images)
        clear.extend(p_clear(vlm, images, answers).tolist())
        for conv, answer, p in zip(batch, answers, posterior):
            right.append(prompts.parse_object(answer) == prompts.parse_object(conv.conversations[1]["value"]))
            confidence.append(float(p.max()))
    right, clear, confidence, logprob = map(np.array, (right, clear, confidence, logprob))
    print(f"{len(right)} photos of {args.data}/{args.split}, Q1 right on {right.mean():.3f}")
    for name, score in (("P(clear), the clarity answer", clear), ("confidence, max class probability", confidence),
                        ("log-probability of its Q1 answer", logprob)):
        q = np.percentile(score, [0, 25, 50, 75, 100])
        print(f"{name:<36} AUC {auc(right, score):.3f}   min / quartiles / max {' / '.join(f'{v:.3f}' for v in q)}")


if __name__ == "__main__":
    main()
