"""How fast data_tools.validate reads big files, and what it does with a 1 GB line.

    python -m benchmarks.bench_validate [--lines 100000] [--huge-line-gb 1]

Writes a 100,000-line Q1+Q6 file (with an image folder, so existence checks run) and a file whose second line is
1 GB long, validates both with the real CLI entry point and prints the wall time and peak memory.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

from data_tools import validate
from occmllm import formats, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--huge-line-gb", type=float, default=1.0, help="0 skips the long-line case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        records = []
        for i in range(args.lines):
            name = f"{i:08d}.jpg"
            (tmp / "images" / name).touch()
            records.append(formats.q1_q6_conversation(f"{i:08d}", name, prompts.CLASSES[i % 8], clear=i % 3 > 0))
        formats.write_jsonl(tmp / "big.jsonl", records)
        size = (tmp / "big.jsonl").stat().st_size
        start = time.perf_counter()
        code = validate.main([str(tmp / "big.jsonl"), "--images-root", str(tmp / "images"), "-q"])
        took = time.perf_counter() - start
        print(f"validate {args.lines:,} lines ({size / 2**20:.1f} MB, image existence checked): {took:.2f} s, "
              f"exit {code}, {args.lines / took:,.0f} lines/s")
        if args.huge_line_gb:
            huge = tmp / "huge.jsonl"
            good = formats._dump(records[0].to_dict()).encode() + b"\n"
            chunk = b"x" * 2**24
            with open(huge, "wb") as f:
                f.write(good + b'{"id": "')
                for _ in range(int(args.huge_line_gb * 2**30 / len(chunk))):
                    f.write(chunk)
                f.write(b'"}\n' + good)
            start = time.perf_counter()
            code = validate.main([str(huge), "--images-root", str(tmp / "images"), "-q"])
            print(f"validate a file with a {huge.stat().st_size / 2**30:.2f} GB line: "
                  f"{time.perf_counter() - start:.2f} s, exit {code}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
