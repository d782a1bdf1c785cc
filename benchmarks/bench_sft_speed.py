"""Training speed of the default model's SFT step (stage 1's: every part trains) by batch size, attention kernel and
torch.compile: samples per second of forward + backward + AdamW, bf16 autocast on CUDA, on batches shaped like the
cached Q1 samples (one 256 px image, the Q1 chat).

    python -m benchmarks.bench_sft_speed                          # GPU: batch 128/256/512, eager and compiled
    python -m benchmarks.bench_sft_speed --batch 64 --steps 5 --no-compile     # CPU: checks that it runs
    python -m benchmarks.bench_sft_speed --batch 512 --sync both              # the cost of reading the loss each step

Prints one line per setting: steps/s, samples/s and peak GPU memory. `--sync on` reads the loss after every step
(`.item()`, which waits for the GPU, as train/sft.py's loop does to log it); `off` (the default) lets the host queue
the next step while the GPU works; `both` times each setting both ways.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sft_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256, 512], help="batch sizes to time")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per setting (after 5 warm-up steps)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    parser.add_argument("--attn", nargs="+", default=["sdpa"], help="attention implementations to time (sdpa, eager)")
    parser.add_argument("--sync", choices=["off", "on", "both"], default="off",
                        help="read the loss after every step (.item(), a wait for the GPU): off, on or both")
    args = parser.parse_args(argv)

    from occmllm.default_model import build_default_model
    from train.common import load_policy
    from train.data import Sample, SFTDataset, collate
    from occmllm import prompts
    from PIL import Image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = build_default_model(tempfile.mkdtemp(prefix="bench-sft-"))
    _, processor = load_policy(folder)
    image = tempfile.mktemp(suffix=".png")
    Image.new("RGB", (256, 256), (90, 120, 150)).save(image)
    item = SFTDataset([Sample(image, [(prompts.Q1, prompts.identify_answer("bottle"))])], processor)[0]
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"{len(item['input_ids'])} tokens per sample")
    syncs = {"off": [False], "on": [True], "both": [False, True]}[args.sync]
    settings = [(b, a, c, s) for c in [False] + [True] * (not args.no_compile) for a in args.attn for b in args.batch
                for s in syncs]
    for batch_size, attn, compiled, sync in settings:
        model, _ = load_policy(folder, device=device)
        model.set_attn_implementation(attn)
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
        batch = collate([item] * batch_size, processor.tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        forward = torch.compile(model) if compiled else model

        def step():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = forward(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if sync:
                loss.item()

        try:
            for _ in range(5):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        except Exception as error:  # a kernel or compile failure is a result too
            print(f"batch {batch_size:4d} attn {attn:5s} compile {compiled!s:5s} sync {sync!s:5s}: failed: {type(error).__name__}: "
                  f"{str(error).splitlines()[0][:160]}")
            continue
        memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
        print(f"batch {batch_size:4d} attn {attn:5s} compile {compiled!s:5s} sync {sync!s:5s}: {args.steps / seconds:7.2f} steps/s "
              f"{args.steps * batch_size / seconds:9.0f} samples/s  peak {memory:5.1f} GiB")


if __name__ == "__main__":
    main()
