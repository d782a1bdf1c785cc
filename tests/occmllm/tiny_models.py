"""Tiny random VLMs of each supported family, built in code and saved to a folder, as a user's checkpoint would be.

    folder = build("llava", tmp_path / "llava")       # then VLM.load(folder)

Families: internvl (the default model's factory at toy size), llava, qwen2_vl, smolvlm. Every one gets a byte-level
BPE tokenizer trained on the project's prompts plus the family's special tokens, a PIL image processor and a
ChatML-like chat template that places the family's image token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from occmllm.default_model import DefaultModelConfig, build_default_model, vocabulary_texts

FAMILIES = ("internvl", "llava", "qwen2_vl", "smolvlm")


def _tokenizer(specials: list[str], named: dict[str, str] | None = None, eos: str = "<|im_end|>"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=base + [s for s in specials if s not in base],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(vocabulary_texts(["USER:", "ASSISTANT:", "User:", "Assistant:"]) * 2, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token="<|endoftext|>",
                                   bos_token=None, extra_special_tokens=named or {})


def _template(image: str) -> str:
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}" + image + "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _text_config(tokenizer, **extra) -> dict:
    return dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=512,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **extra)


def _save(model, processor, tokenizer, folder: Path) -> Path:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build(family: str, folder: str | Path, seed: int = 0) -> Path:
    folder = Path(folder)
    torch.manual_seed(seed)
    if family == "internvl":
        config = DefaultModelConfig(image_size=64, patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2,
                                    vision_intermediate=64, text_hidden=32, text_layers=1, text_heads=2,
                                    text_kv_heads=1, text_intermediate=64, vocab_size=400, seed=seed)
        return build_default_model(folder, config)
    from occmllm.processors import image_only_processor_class

    if family == "llava":
        from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tokenizer = _tokenizer(["<image>"], {"image_token": "<image>"})
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
            num_additional_image_tokens=1, chat_template=_template("<image>"))
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=64, image_size=32, patch_size=8, projection_dim=32),
            text_config=_text_config(tokenizer, model_type="qwen2"),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
            vision_feature_layer=-1)
        return _save(LlavaForConditionalGeneration(config), processor, tokenizer, folder)
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokens = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
        tokenizer = _tokenizer(tokens)
        processor = image_only_processor_class(Qwen2VLProcessor)(
            image_processor=Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14,
                                                     merge_size=2, temporal_patch_size=2),
            tokenizer=tokenizer, chat_template=_template("<|vision_start|><|image_pad|><|vision_end|>"))
        ids = tokenizer.convert_tokens_to_ids
        config = Qwen2VLConfig(
            vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
            text_config=_text_config(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                 "mrope_section": [2, 3, 3]}),
            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
        return _save(Qwen2VLForConditionalGeneration(config), processor, tokenizer, folder)
    if family == "smolvlm":
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

        named = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                 "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
        tokenizer = _tokenizer(list(named.values()), named)
        processor = image_only_processor_class(SmolVLMProcessor)(
            image_processor=SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                                     max_image_size={"longest_edge": 32}),
            tokenizer=tokenizer, image_seq_len=4, chat_template=_template("<image>"))
        config = SmolVLMConfig(
            vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               image_size=32, patch_size=8),
            text_config=_text_config(tokenizer, model_type="llama", head_dim=16),
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2)
        return _save(SmolVLMForConditionalGeneration(config), processor, tokenizer, folder)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
