"""The command line of occmllm.relabel (its docstring is this command's --help)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from occmllm import formats
from occmllm import relabel as library
from occmllm.dataset import SPLITS, manifest_path
from occmllm.relabel import relabel, write_relabelled


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_tools.relabel", description=library.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset folder written by data_tools.synth")
    p.add_argument("--split", choices=SPLITS, required=True)
    p.add_argument("--predictions", type=Path, required=True, help="JSON {id: answer to Q1}")
    p.add_argument("--missing", choices=("error", "keep", "unclear"), default="error",
                   help="images without a prediction: stop (default), keep their label, or mark them unclear")
    args = p.parse_args(argv)
    manifest = manifest_path(args.data, args.split)
    try:
        if not manifest.is_file():
            raise ValueError(f"{manifest}: no manifest (is {args.data} a data_tools.synth folder?)")
        predictions = formats.read_predictions(args.predictions)
        m = relabel(pd.read_parquet(manifest), predictions, args.missing, f"predictions:{args.predictions.name}")
    except (ValueError, OSError) as e:  # FormatError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    m, counts = write_relabelled(args.data, args.split, m)
    changed = int((m["clear"] != m["clear_visibility"]).sum())
    print(f"{args.split}: {int(m['clear'].sum())} clear, {int((~m['clear']).sum())} unclear "
          f"({changed} changed from the visibility label); rewrote {', '.join(counts)} and meta.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
