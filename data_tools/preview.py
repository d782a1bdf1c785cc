"""The command line of occmllm.contact_sheet (its docstring is this command's --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from occmllm import contact_sheet as library
from occmllm.contact_sheet import contact_sheet
from occmllm.dataset import SPLITS, SynthDataset


def main(argv=None) -> int:
    from occmllm.shipped import LEARNED_HELP

    p = argparse.ArgumentParser(prog="python -m data_tools.preview", description=library.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="dataset folder written by data_tools.synth")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--n", type=int, default=24, help="number of samples on the sheet")
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-render", action="store_true", help="also show the object render and the masks")
    p.add_argument("--experts", nargs="+", default=[], metavar="EXPERT", help="also each learned 3D expert's "
                   f"render, labelled with its IoU: {LEARNED_HELP}")
    p.add_argument("--object-class", help="only samples of this class (e.g. knife)")
    p.add_argument("--out", type=Path, help="PNG to write (default DATA/preview[_split].png)")
    args = p.parse_args(argv)
    if args.n < 1 or args.cols < 1:
        p.error("--n and --cols must be at least 1")
    try:
        ds = SynthDataset(args.data, args.split)
        experts = {}
        if args.experts:
            from occmllm.recon import LearnedExpert
            from occmllm.recon.experts import learned_weights

            experts = {name: LearnedExpert(learned_weights(name, older_spelling_ok=True)) for name in args.experts}
        sheet = contact_sheet(ds, args.n, args.cols, args.seed, args.with_render, experts, args.object_class)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.data / ("preview.png" if args.split == "train" else f"preview_{args.split}.png")
    sheet.save(out)
    print(f"wrote {out} ({sheet.size[0]}x{sheet.size[1]}, {min(args.n, len(ds))} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
