"""The embedded default model: a small VLM of the InternVL architecture, built in code.

`InternVLForConditionalGeneration` (the seed's family, so real InternVL checkpoints drop in) with a tiny vision tower
(256 px, 16 px patches, pixel shuffle 0.5 -> 64 image tokens) and a tiny Qwen2 language model, a byte-level BPE
tokenizer trained locally with `tokenizers` on the project's own vocabulary (every string of `occmllm.prompts` plus
the chat-template tokens), a PIL image processor and a ChatML chat template. Random weights until the training
stages train it; the trained weights ship as package data in `occmllm/default_model/weights/`.

    python -m occmllm.default_model OUT_DIR            # build an untrained default model folder
    >>> from occmllm.default_model import build_default_model, DefaultModelConfig
    >>> folder = build_default_model("out/default")    # loadable by occmllm.vlm.VLM.load(folder)

A folder built here carries `occmllm_default.json` with `"trained": false`; `mark_trained(folder, ...)` (called by the
training stages) sets it to true. `VLM.load` reads it and `VLM.trained` says it, so nothing pretends.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from occmllm import prompts

DEFAULT_MODEL = "default"  # its name where a model is chosen by name (--model, the app's model box)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # trained weights ship here (package data)
MARKER = "occmllm_default.json"  # {"trained": bool, ...} written beside config.json
MAX_NEW_TOKENS = 16  # its longest pipeline answer, "The object is cellphone.", is 5 tokens + <|im_end|>

# ChatML, as InternVL2/3 and Qwen2 use it. An image item becomes <IMG_CONTEXT>, which the InternVL processor expands
# to <img><IMG_CONTEXT>*image_seq_length</img>.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<IMG_CONTEXT>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = {
    "pad_token": "<|endoftext|>",
    "eos_token": "<|im_end|>",
}
IMAGE_TOKENS = {  # the names InternVLProcessor reads from its tokenizer
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


@dataclass
class DefaultModelConfig:
    """Sizes of the default model. The defaults keep a whole CoT well under 300 ms on 2 CPU cores and the fp32
    weights under 30 MB (about 5.6 M parameters)."""

    image_size: int = 256
    patch_size: int = 16
    vision_hidden: int = 192
    vision_layers: int = 4
    vision_heads: int = 3
    vision_intermediate: int = 768
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 768
    vocab_size: int = 640  # BPE merges stop earlier when the corpus runs out of pairs
    max_position_embeddings: int = 1024
    seed: int = 0
    model_vocab_size: int | None = None  # embedding rows; None = the tokenizer's size (benchmarks set 151674)
    extra_texts: list[str] = field(default_factory=list)  # more strings for the tokenizer to learn

    @property
    def image_seq_length(self) -> int:
        return (self.image_size // self.patch_size) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5


def vocabulary_texts(extra: list[str] = ()) -> list[str]:
    """Every string the default model reads or writes: the questions and answers of occmllm.prompts."""
    texts = [prompts.Q1, prompts.Q6, prompts.Q6_PREFERENCE, prompts.Q0, prompts.Q0_PLAN, prompts.SECOND_ATTEMPT]
    texts += [prompts.identify_answer(c) for c in prompts.CLASSES] + list(prompts.CLASSES)
    texts += [prompts.clarity_answer(True), prompts.clarity_answer(False), prompts.YES, prompts.NO]
    texts += list(prompts.ATTRIBUTE_QUESTIONS.values()) + [prompts.attribute_answer(v) for v in (True, False)]
    texts += [prompts.STEP_DESCRIBE, prompts.STEP_IDENTIFY, prompts.STEP_REFLECT, prompts.STEP_3D]
    texts += ["user\n", "assistant\n", "system\n", "\n"] + list(extra)
    return texts


def build_tokenizer(config: DefaultModelConfig | None = None):
    """A byte-level BPE tokenizer trained on `vocabulary_texts()`: any text encodes, the project's words are single
    tokens ("The", " object", " is", " cellphone", "."), and the chat/image tokens are special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    config = config or DefaultModelConfig()
    specials = [SPECIAL_TOKENS["pad_token"], "<|im_start|>", SPECIAL_TOKENS["eos_token"], *IMAGE_TOKENS.values()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size, special_tokens=specials, min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(vocabulary_texts(config.extra_texts) * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=None, padding_side="left",
        extra_special_tokens=dict(IMAGE_TOKENS), **SPECIAL_TOKENS,
    )


def build_processor(tokenizer, config: DefaultModelConfig | None = None):
    """The InternVL processor without a video processor (no torchvision here), PIL image processor, one 256 px tile."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from occmllm.processors import image_only_processor_class
    from transformers import InternVLProcessor

    config = config or DefaultModelConfig()
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": config.image_size, "width": config.image_size}, crop_to_patches=False, max_patches=1,
        min_patches=1,
    )
    processor_class = image_only_processor_class(InternVLProcessor)
    return processor_class(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=config.image_seq_length,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer, config: DefaultModelConfig | None = None):
    """`InternVLForConditionalGeneration` with random weights (seeded) for `tokenizer`."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    config = config or DefaultModelConfig()
    model_config = InternVLConfig(
        vision_config=dict(
            hidden_size=config.vision_hidden, num_hidden_layers=config.vision_layers,
            num_attention_heads=config.vision_heads, intermediate_size=config.vision_intermediate,
            image_size=config.image_size, patch_size=config.patch_size,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=config.text_hidden, num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads, num_key_value_heads=config.text_kv_heads,
            intermediate_size=config.text_intermediate, vocab_size=config.model_vocab_size or len(tokenizer),
            max_position_embeddings=config.max_position_embeddings, tie_word_embeddings=True,
            bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["context_image_token"]),
        image_seq_length=config.image_seq_length, downsample_ratio=0.5, tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    model = InternVLForConditionalGeneration(model_config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    return model


def build_default_model(out_dir: str | Path, config: DefaultModelConfig | None = None) -> Path:
    """Build the untrained default model (tokenizer, processor, random weights) and save it to `out_dir`."""
    config = config or DefaultModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(config)
    processor = build_processor(tokenizer, config)
    model = build_model(tokenizer, config)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_marker(out, {"trained": False, "max_new_tokens": MAX_NEW_TOKENS, "config": asdict(config)})
    return out


def read_marker(folder: str | Path) -> dict | None:
    """The folder's `occmllm_default.json`, or None when it is not a default-model folder."""
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def write_marker(folder: str | Path, marker: dict) -> None:
    """Write the folder's `occmllm_default.json` (the one place it is written)."""
    (Path(folder) / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def mark_trained(folder: str | Path, source: str | Path | None = None, **info) -> None:
    """Record in `folder` that its weights are trained, on top of what `source`'s marker (default: the folder's own)
    says; the training stages call this when they save a model (train/common.py:save_model)."""
    marker = read_marker(source or folder) or {}
    marker.update(info, trained=True)
    write_marker(folder, marker)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m occmllm.default_model", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="folder to write the untrained default model to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    folder = build_default_model(args.out_dir, DefaultModelConfig(seed=args.seed))
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"wrote untrained default model to {folder} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
