"""The command line of occmllm.expert_renders (its docstring is this command's --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from occmllm import expert_renders as library
from occmllm.dataset import EXPERT_RENDERS, kind_folder
from occmllm.expert_renders import render_split
from occmllm.recon.experts import learned_weights
from occmllm.shipped import LEARNED_HELP


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.expert_renders", description=library.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (data_tools.synth or the same layout)")
    parser.add_argument("--split", default="train", help="split whose photos are rendered (default train)")
    parser.add_argument("--expert", default="learned", help=f"the learned 3D expert: {LEARNED_HELP}")
    parser.add_argument("--workers", type=int, default=1, help="processes, one thread each (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos of the split")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: each worker runs the network on the GPU")
    parser.add_argument("--batched", action="store_true", help="run the network in this process on batches of "
                        "--batch-size photos, the workers only meshing and rendering (slower on the H100 box measured)")
    parser.add_argument("--batch-size", type=int, default=64, help="photos per pass of the network with --batched")
    parser.add_argument("--overwrite", action="store_true", help="render every photo again, also those already "
                        "rendered (needed after changing the expert)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device {args.device}: no CUDA GPU here (use --device cpu)", file=sys.stderr)
            return 2
    try:
        expert = str(learned_weights(args.expert, older_spelling_ok=True))
        counts = render_split(args.data, args.split, expert, args.workers, args.limit, overwrite=args.overwrite,
                              device=args.device, batched=args.batched, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{kind_folder(args.data, args.split, EXPERT_RENDERS)}: {counts['rendered']} rendered, {counts['skipped']} already there, "
          f"{counts['nothing']} with nothing reconstructed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
