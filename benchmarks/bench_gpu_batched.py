"""Batched evaluation vs a one-image-at-a-time loop (like the seed's), with a 1B-class InternVL shape, random weights.

    python -m benchmarks.bench_gpu_batched                     # on a GPU: 512 images, batch 64
    python -m benchmarks.bench_gpu_batched --smoke             # tiny shapes on CPU: checks that it runs
    python -m benchmarks.bench_gpu_batched --chat-layout --reference REF_DIR [--smoke]

--chat-layout: the paper's format against the seed's own loop. A checkpoint of InternVL2-1B's shape (InternViT-300M +
Qwen2-0.5B, random weights, bfloat16) is built with InternVL's own code (`InternVLChatModel`) and saved in the chat
layout, converted by occmllm.convert (timed), and evaluated batched by occmllm; then InternVL's `model.chat` runs the
seed's loop on the same card in the same process: per photo the seed's load_image (dynamic_preprocess, up to 12
tiles + thumbnail, 448 px) and two chats (Q1, then Q6 with the history), each re-encoding the image. REF_DIR holds
InternVL's `internvl_chat/internvl` (from github OpenGVLab/InternVL; never committed) and, where einops is not
installed, an unpacked einops; `timm` is replaced by an identity DropPath here. Both generate exactly --tokens tokens
per answer. The reference runs with eager attention (InternVL's code falls back to it without flash-attn).

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


VISION_1B = dict(architectures=["InternVisionModel"], model_type="intern_vit_6b", hidden_size=1024, num_hidden_layers=24,
                 num_attention_heads=16, intermediate_size=4096, image_size=448, patch_size=14, qkv_bias=True,
                 qk_normalization=False, norm_type="layer_norm", layer_norm_eps=1e-6, use_flash_attn=False,
                 hidden_act="gelu", drop_path_rate=0.0)
QWEN2_0_5B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864, vocab_size=151674,
                  max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, use_sliding_window=False,
                  bos_token_id=None, attn_implementation="eager")
TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=56)
TINY_LLM = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)


def import_reference(folder: str):
    """InternVL's internvl_chat code from `folder` (or `folder/internvl_chat`), with an identity DropPath for timm
    when timm is missing, and dynamic_preprocess read unchanged out of its train/dataset.py (which imports cv2 etc.)."""
    import ast
    import sys
    import types
    from pathlib import Path

    root = Path(folder).resolve()
    code_root = root / "internvl_chat" if (root / "internvl_chat" / "internvl").is_dir() else root
    if not (code_root / "internvl" / "model" / "internvl_chat").is_dir():
        raise SystemExit(f"--reference {folder}: no internvl_chat/internvl/model/internvl_chat in it")
    sys.path[:0] = [str(code_root), str(root)]
    try:
        import timm.models.layers
    except Exception:  # noqa: BLE001 - no timm (it needs torchvision): an identity DropPath (inference only)
        timm, models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
        layers.DropPath = type("DropPath", (torch.nn.Identity,), {"__init__": lambda self, *a, **k: torch.nn.Identity.__init__(self)})
        timm.models, models.layers = models, layers
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    from internvl.model.internvl_chat import InternVLChatConfig, InternVLChatModel

    source = (code_root / "internvl" / "train" / "dataset.py").read_text()
    namespace = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in ("find_closest_aspect_ratio", "dynamic_preprocess"):
            exec(ast.get_source_segment(source, node), namespace)  # noqa: S102 - InternVL's own tiling, unchanged
    return InternVLChatConfig, InternVLChatModel, namespace["dynamic_preprocess"]


def build_chat_layout(reference, smoke: bool, folder, device: str) -> str:
    """A checkpoint of InternVL2-1B's shape (or a tiny one) in the chat layout, built by InternVL's code: random
    weights, bfloat16, a small byte-level BPE tokenizer with Qwen2's and InternVL's special tokens (the embedding keeps
    the real 151,674 rows)."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from occmllm.default_model import vocabulary_texts

    config_class, model_class, _ = reference
    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>",
                "<ref>", "</ref>", "<box>", "</box>"]
    tok.train_from_iterator(vocabulary_texts() * 2, trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token=None, additional_special_tokens=specials[1:])
    tokenizer.save_pretrained(str(folder))
    vision = dict(VISION_1B, **TINY) if smoke else VISION_1B
    llm = dict(QWEN2_0_5B, **TINY_LLM, vocab_size=len(tokenizer)) if smoke else QWEN2_0_5B
    config = config_class(vision_config=vision, llm_config=llm, template="Hermes-2", select_layer=-1,
                          force_image_size=vision["image_size"], downsample_ratio=0.5, dynamic_image_size=True,
                          use_thumbnail=True, ps_version="v2", min_dynamic_patch=1, max_dynamic_patch=12,
                          architectures=["InternVLChatModel"])
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(config, use_flash_attn=False)
    # newer transformers build the config class with no arguments while saving (to find non-default generation
    # settings); InternVL's config refuses that (no LLM architecture), so that step is skipped for it
    config_class.has_no_defaults_at_init = True
    model.to(torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    return str(folder)


def reference_loop(reference, folder: str, images, tokens: int, device: str) -> tuple[float, list[str]]:
    """The seed's loop: per photo InternVL2's load_image and model.chat for Q1 then Q6 (history). Images/second."""
    import numpy as np
    from transformers import AutoTokenizer

    from occmllm import prompts

    _, model_class, dynamic_preprocess = reference
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = model_class.from_pretrained(folder, torch_dtype=dtype, use_flash_attn=False).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    size = model.config.force_image_size
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def load_image(image):  # InternVL2's load_image: dynamic tiles + T.Resize(BICUBIC), ToTensor, Normalize (on PIL)
        from PIL import Image as PILImage

        tiles = dynamic_preprocess(image.convert("RGB"), image_size=size, use_thumbnail=True, max_num=12)
        arrays = [torch.from_numpy(np.asarray(t.resize((size, size), PILImage.BICUBIC), dtype=np.uint8).copy())
                  .permute(2, 0, 1).float().div(255) for t in tiles]
        return (torch.stack(arrays) - mean) / std

    generation = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    answers = []
    with torch.no_grad():
        pixel_values = load_image(images[0]).to(device, dtype)  # warm-up
        model.chat(tokenizer, pixel_values, prompts.Q1, dict(generation))
        sync(device)
        start = time.perf_counter()
        for image in images:
            pixel_values = load_image(image).to(device, dtype)
            answer, history = model.chat(tokenizer, pixel_values, prompts.Q1, dict(generation), history=None,
                                         return_history=True)
            model.chat(tokenizer, pixel_values, prompts.Q6, dict(generation), history=history)
            answers.append(answer)
        sync(device)
    return len(images) / (time.perf_counter() - start), answers


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, CPU, few images")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--loop-images", type=int, default=64, help="images for the (slow) one-at-a-time loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=6, help="tokens generated per answer")
    parser.add_argument("--no-reuse", action="store_true", help="loop re-encodes the image for Q6, like the seed")
    parser.add_argument("--chat-layout", action="store_true", help="build the 1B shape in InternVL's chat layout with "
                        "InternVL's code, convert it, and time InternVL's model.chat loop (needs --reference)")
    parser.add_argument("--reference", help="folder with InternVL's internvl_chat/internvl code (scratch, not in git)")
    parser.add_argument("--keep", help="folder to build the chat-layout checkpoint in (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.chat_layout:
        return chat_layout_main(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.smoke:
        args.images, args.loop_images, args.batch_size = 16, 8, 8
    from occmllm import prompts
    from occmllm.vlm import VLM
    from benchmarks.bench_cot import photos

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


def chat_layout_main(args) -> None:
    """--chat-layout: build, convert, our batched evaluation, InternVL's model.chat loop; figures of each."""
    from pathlib import Path

    from occmllm import prompts
    from occmllm.convert import convert
    from occmllm.vlm import VLM
    from benchmarks.bench_cot import photos

    if not args.reference:
        raise SystemExit("--chat-layout needs --reference DIR (InternVL's internvl_chat code)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    if args.smoke:
        args.images, args.loop_images, args.batch_size = 16, 8, 8
    reference = import_reference(args.reference)
    root = Path(args.keep or tempfile.mkdtemp())
    start = time.perf_counter()
    folder = build_chat_layout(reference, args.smoke, root / "chat_layout", device)
    print(f"built {folder} with InternVL's code in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    native = convert(folder, root / "native")
    print(f"converted to {native} in {time.perf_counter() - start:.1f} s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vlm = VLM.load(native, device=device)
    vlm.max_new_tokens = args.tokens
    vlm.model.generation_config.min_new_tokens = args.tokens
    print(f"model: {vlm.describe()}, {sum(p.numel() for p in vlm.model.parameters()) / 1e6:.0f} M parameters")
    images = photos(max(args.images, args.loop_images), size=448)
    vlm.generate_batch(images[:2], [prompts.Q1] * 2)  # warm-up
    sync(device)
    start = time.perf_counter()
    ours = []
    for index in range(0, args.images, args.batch_size):
        batch = images[index:index + args.batch_size]
        q1 = vlm.generate_batch(batch, [prompts.Q1] * len(batch))
        vlm.generate_batch(batch, [prompts.Q6] * len(batch), histories=[[(prompts.Q1, a)] for a in q1])
        ours += q1
    sync(device)
    batched = args.images / (time.perf_counter() - start)
    del vlm
    if device == "cuda":
        torch.cuda.empty_cache()
    loop, theirs = reference_loop(reference, folder, images[: args.loop_images], args.tokens, device)
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"ours, batched (batch {args.batch_size}, converted checkpoint): {batched:.2f} images/s over {args.images} images")
    print(f"InternVL model.chat loop (the seed's, re-encoding for Q6): {loop:.2f} images/s over {args.loop_images} images")
    print(f"ratio: {batched / loop:.1f}x (target >= 5x)")
    print(f"first answers equal, ours batched vs model.chat: {same}/{len(theirs)} (random weights, "
          f"{'bfloat16: near-ties may differ' if device == 'cuda' else 'float32'})")


if __name__ == "__main__":
    main()
