"""Run the chain of thought on photos and print each step (or the traces as JSON).

    python -m occmllm.infer photo.jpg [more.jpg ...] [--model PATH] [--expert learned] [--describe] [--json]

Without --model the embedded default model is used (it says so when it is untrained). The 3D expert is the app's:
the one the model was trained with (recorded in its folder by train/run_all.py), else `learned`
(occmllm.shipped.DEFAULT_EXPERT), unless --expert says otherwise: none, learned:NAME|FOLDER,
oracle:DATA_DIR[:SPLIT], folder:DIR (precomputed renders, the seed's MOHO naming). With --expert none a "No" to the
clarity question is reported as "3D required" with no expert, and the first answer is kept. Each identify step also
prints the model's three most probable classes, and the self-assessment its probabilities of "Yes." and "No."
(--no-probabilities to skip those extra passes).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from occmllm.images import ImageError
from occmllm.shipped import LEARNED_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m occmllm.infer", description=__doc__.split("\n")[0],
                                     epilog="Example: python -m occmllm.infer photo.jpg --expert learned --json")
    parser.add_argument("images", nargs="+", help="photo files (jpg, png, ...)")
    parser.add_argument("--model", help="model folder (default: the embedded default model)")
    parser.add_argument("--expert", default=None, help="3D expert, as in the app (default: the one the model was "
                        f"trained with, recorded in its folder, else learned): {LEARNED_HELP} | "
                        "oracle:DATA_DIR | folder:DIR | none")
    parser.add_argument("--no-probabilities", dest="probabilities", action="store_false",
                        help="skip the class probabilities and the self-assessment's Yes / No probabilities (a short extra pass each, from the conversation's cache)")
    parser.add_argument("--describe", action="store_true", help="ask the round / thin / long questions first")
    parser.add_argument("--force-3d", action="store_true", help="reconstruct even when the model says it is clear")
    parser.add_argument("--fuse", action="store_true", help="when a render is read, decide by the photo and the render "
                        "together (their class probabilities multiplied) instead of the render alone; with "
                        "--force-3d every photo is read both ways")
    parser.add_argument("--out", help="folder for renders and meshes (one sub-folder per photo)")
    parser.add_argument("--json", action="store_true", help="print one JSON trace per photo instead of the steps")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    args = parser.parse_args(argv)

    from occmllm.expert_renders import expert_for_model
    from occmllm.pipeline import Step, Trace, run_cot
    from occmllm.recon import expert_from_spec
    from occmllm.vlm import VLM, ModelLoadError

    note = None
    if args.expert is None:
        args.expert, note = expert_for_model(args.model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vlm = VLM.load_named(args.model, device=args.device)
        expert = expert_from_spec(args.expert)
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"model: {vlm.describe()}\n3D expert: {args.expert}" + (f" ({note})" if note else ""))
        if not vlm.trained:
            print("WARNING: the default model is untrained (random weights); its answers mean nothing yet.")
    failures = 0
    for index, path in enumerate(args.images):
        out_dir = f"{args.out}/{index:04d}" if args.out else None
        try:
            for event in run_cot(vlm, path, expert=expert, describe=args.describe, force_3d=args.force_3d,
                                 out_dir=out_dir, fuse=args.fuse, probabilities=args.probabilities):
                if isinstance(event, Trace):
                    if args.json:
                        print(event.to_json(indent=None))
                    else:
                        print(f"  final: {event.final}  ({event.seconds * 1000:.0f} ms)\n")
                elif not args.json and isinstance(event, Step):
                    if event.name == "identify" and event.prompt:
                        print(f"{path}")
                    shown = event.raw if event.raw is not None else event.info.get("message", "")
                    print(f"  {event.name:12s} {event.heading[:60]!s:60s} -> {shown!r} [{event.parsed}] "
                          f"{event.seconds * 1000:.0f} ms")
                    if event.info.get("classes"):
                        top = sorted(event.info["classes"].items(), key=lambda kv: -kv[1])[:3]
                        print(f"  {'':12s} class probabilities: " + ", ".join(f"{c} {p:.2f}" for c, p in top))
                    if event.info.get("clarity"):
                        print(f"  {'':12s} answer probabilities: " +
                              ", ".join(f"{a} {p:.2f}" for a, p in event.info["clarity"].items()))
                    if event.info.get("note"):
                        print(f"  {'':12s} note: {event.info['note']}")
        except ImageError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
