"""Batched evaluation vs a one-image-at-a-time loop (like the seed's), with a 1B-class InternVL shape, random weights.

    python -m tests.benchmarks.bench_gpu_batched                     # on a GPU: 512 images, batch 64
    python -m tests.benchmarks.bench_gpu_batched --smoke             # tiny shapes on CPU: checks that it runs

The shape is InternVL3-1B's (InternViT-300M: 448 px, 14 px patches, 24 layers, 1024 wide -> 256 image tokens;
Qwen2.5-0.5B: 24 layers, 896 wide, 14 heads / 2 KV heads, 151,674 vocabulary), bfloat16 on CUDA. One 448 px tile per
image (the seed allowed up to 2 tiles). Both modes ask Q1 then Q6 (two turns) on every image and generate exactly
--tokens tokens per answer (min = max, so random weights cost what a trained model's answers would). The loop uses
VLM.chat (the second turn reuses the image prefix's KV cache); --no-reuse makes it re-encode like the seed's
model.chat. Prints images/second of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch


def build(smoke: bool, folder: str) -> str:
    from occmllm.default_model import DefaultModelConfig, build_default_model

    if smoke:
        config = DefaultModelConfig(image_size=64, patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2,
                                    vision_intermediate=64, text_hidden=32, text_layers=1, text_heads=2,
                                    text_kv_heads=1, text_intermediate=64)
    else:
        config = DefaultModelConfig(image_size=448, patch_size=14, vision_hidden=1024, vision_layers=24,
                                    vision_heads=16, vision_intermediate=4096, text_hidden=896, text_layers=24,
                                    text_heads=14, text_kv_heads=2, text_intermediate=4864,
                                    max_position_embeddings=32768, model_vocab_size=151674)
    return build_default_model(folder, config)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, CPU, few images")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--loop-images", type=int, default=64, help="images for the (slow) one-at-a-time loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=6, help="tokens generated per answer")
    parser.add_argument("--no-reuse", action="store_true", help="loop re-encodes the image for Q6, like the seed")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.smoke:
        args.images, args.loop_images, args.batch_size = 16, 8, 8
    from occmllm import prompts
    from occmllm.vlm import VLM
    from tests.benchmarks.bench_cot import photos

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = VLM.load(build(args.smoke, tempfile.mkdtemp()), device="cpu" if args.smoke else None)
    vlm.max_new_tokens = args.tokens
    vlm.model.generation_config.min_new_tokens = args.tokens
    print(f"model: {vlm.describe()}, {sum(p.numel() for p in vlm.model.parameters()) / 1e6:.0f} M parameters")
    images = photos(max(args.images, args.loop_images), size=448 if not args.smoke else 64)

    def sync():
        if torch.cuda.is_available() and not args.smoke:
            torch.cuda.synchronize()

    vlm.generate_batch(images[:2], [prompts.Q1] * 2)  # warm-up
    sync()
    start = time.perf_counter()
    for index in range(0, args.images, args.batch_size):
        batch = images[index:index + args.batch_size]
        q1 = vlm.generate_batch(batch, [prompts.Q1] * len(batch))
        vlm.generate_batch(batch, [prompts.Q6] * len(batch), histories=[[(prompts.Q1, a)] for a in q1])
    sync()
    batched = args.images / (time.perf_counter() - start)

    start = time.perf_counter()
    for image in images[: args.loop_images]:
        answer, history = vlm.chat(image, prompts.Q1, return_history=True)
        if args.no_reuse:
            vlm.forget()
        vlm.chat(image, prompts.Q6, history=history)
    sync()
    loop = args.loop_images / (time.perf_counter() - start)
    print(f"batched (batch {args.batch_size}): {batched:.2f} images/s over {args.images} images")
    print(f"one at a time ({'re-encoding' if args.no_reuse else 'KV reuse'}): {loop:.2f} images/s over "
          f"{args.loop_images} images")
    print(f"ratio: {batched / loop:.1f}x")


if __name__ == "__main__":
    main()
