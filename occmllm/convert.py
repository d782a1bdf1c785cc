"""InternVL2 checkpoints in the InternVL chat layout (the paper's released models) -> transformers' native InternVL.

The paper's four models (InternVL2 1B / 2B / 4B / 8B: Qwen2, InternLM2, Phi-3 and InternLM2.5 language models) are
saved the way InternVL's own code saves them: `config.json` with `architectures: ["InternVLChatModel"]`, an
`llm_config` of the LLM's type, an InternViT `vision_config`, weights named `vision_model.*`, `mlp1.*`,
`language_model.*`, and the LLM's tokenizer. The seed reads them with `trust_remote_code=True` and `model.chat`.
This module turns such a folder, once, into a folder that `VLM.load` (and everything built on it) reads natively:

- weights renamed to `InternVLForConditionalGeneration`'s names; InternViT's fused `attn.qkv` split into q/k/v;
  InternLM2's grouped `wqkv` split into q/k/v and its layers renamed to Llama's (InternLM2 *is* Llama with other
  names); Qwen2 and Phi-3 layers keep their layout. Every tensor is checked against the native model's names and
  shapes before anything is written; nothing is re-computed, so the conversion is lossless (same dtype, same values).
- the tokenizer as a fast tokenizer (`tokenizer.json`) that gives the same ids as the original (slow) one, with
  InternVL's image tokens named for the processor;
- a chat template that renders exactly the prompt of InternVL2's conversation template (`Hermes-2`,
  `internlm2-chat`, `phi3-chat`) with its system message, and the template's separator as end of answer;
- the image processor set to the seed's tiling: 448 px tiles chosen by aspect ratio (1 to 12, from the config's
  `min/max_dynamic_patch`), plus a thumbnail, ImageNet mean and std.

    python -m occmllm.convert SRC DST                  # explicit
    >>> from occmllm.convert import converted_folder
    >>> converted_folder("outputdir-1b-...")            # what VLM.load does: convert once, then reuse the cache

The cache: `SRC/occmllm_native/` when SRC is writable, else `$OCCMLLM_CACHE/converted/<name>-<hash>` (default
`~/.cache/occmllm`). It is reused while the source's config and weight files are unchanged (size and time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPPORTED = {  # llm_config.architectures[0] -> (native text model_type, name in messages)
    "Qwen2ForCausalLM": ("qwen2", "Qwen2 (InternVL2-1B)"),
    "InternLM2ForCausalLM": ("llama", "InternLM2 / InternLM2.5 (InternVL2-2B, InternVL2-8B)"),
    "Phi3ForCausalLM": ("phi3", "Phi-3 (InternVL2-4B)"),
}
# InternVL2's system message (its conversation.py; InternVL2.5 changed it, the InternVL2 templates kept this one)
INTERNVL2_SYSTEM_MESSAGE = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MARKER = "occmllm_converted.json"
CACHE_NAME = "occmllm_native"
FORMAT_VERSION = 1  # bump when the converted folder's layout changes: older caches are rebuilt
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
SHARD_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class ChatTemplate:
    """One of InternVL2's conversation templates (SeparatorStyle.MPT): system prefix, role prefixes, separator."""

    system: str
    user: str
    assistant: str
    sep: str


TEMPLATES = {
    "Hermes-2": ChatTemplate("<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "internlm2-chat": ChatTemplate("<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "phi3-chat": ChatTemplate("<|system|>\n", "<|user|>\n", "<|assistant|>\n", "<|end|>"),
}


class ConversionError(RuntimeError):
    """A folder that cannot be converted; the message says what was found and what is supported."""


# --- detection ----------------------------------------------------------------------------------------------------
def read_config(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def is_chat_layout(folder: str | os.PathLike) -> bool:
    """True for an InternVL chat-layout folder (`InternVLChatModel` / model_type `internvl_chat`)."""
    config = read_config(Path(folder))
    return config.get("model_type") == "internvl_chat" or "InternVLChatModel" in (config.get("architectures") or [])


def _supported_text() -> str:
    return (f"supported: InternVL2 chat-layout checkpoints with an InternViT-300M vision model and a "
            f"{', '.join(name for _, name in SUPPORTED.values())} language model, templates {', '.join(TEMPLATES)}")


def check_chat_layout(folder: str | os.PathLike) -> dict:
    """The folder's config.json when it is a chat-layout checkpoint this module converts; else ConversionError
    naming what was found and what is supported."""
    folder = Path(folder)
    config = read_config(folder)
    llm, vision = config.get("llm_config") or {}, config.get("vision_config") or {}
    arch = (llm.get("architectures") or [None])[0]
    found = f"{folder}: InternVL chat layout with language model {arch!r}, template {config.get('template')!r}"
    problems = []
    if arch not in SUPPORTED:
        problems.append(f"language model {arch!r} is not one of {', '.join(SUPPORTED)}")
    if config.get("template") not in TEMPLATES:
        problems.append(f"conversation template {config.get('template')!r} is not one of {', '.join(TEMPLATES)}")
    if config.get("ps_version", "v1") != "v2":
        problems.append(f"pixel shuffle {config.get('ps_version', 'v1')!r} (only 'v2', InternVL2's)")
    if vision.get("qk_normalization") or vision.get("norm_type", "rms_norm") != "layer_norm":
        problems.append("vision model with QK normalisation / RMSNorm (InternViT-6B); only InternViT-300M")
    size = config.get("force_image_size") or vision.get("image_size")
    if size and vision.get("image_size") and size != vision.get("image_size"):
        problems.append(f"force_image_size {size} differs from the vision model's {vision.get('image_size')}")
    if config.get("dynamic_image_size", True) and not config.get("use_thumbnail", True):
        problems.append("dynamic tiles without a thumbnail")
    if arch == "InternLM2ForCausalLM" and llm.get("bias"):
        problems.append("InternLM2 with bias=true")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        problems.append("no weights (model.safetensors / pytorch_model.bin, or their .index.json)")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        problems.append("no tokenizer (tokenizer.model, tokenizer.json or vocab.json + merges.txt)")
    if problems:
        raise ConversionError(f"{found}: cannot convert: {'; '.join(problems)}. {_supported_text()}")
    return config


# --- weights ------------------------------------------------------------------------------------------------------
class _Source:
    """The source's tensors by name, read lazily from safetensors (single or sharded) or pytorch_model.bin."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, Path] = {}
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if (folder / index_name).is_file():
                weight_map = json.loads((folder / index_name).read_text())["weight_map"]
                self.files = {name: folder / file for name, file in weight_map.items()}
                break
        else:
            file = folder / "model.safetensors"
            if not file.is_file():
                file = folder / "pytorch_model.bin"
            self.files = {name: file for name in self._names(file)}
        self._open: dict[Path, object] = {}

    @staticmethod
    def _names(file: Path) -> list[str]:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), "pt") as handle:
                return list(handle.keys())
        import torch

        return list(torch.load(file, map_location="cpu", weights_only=True, mmap=True).keys())

    def _handle(self, file: Path):
        if file not in self._open:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                self._open[file] = safe_open(str(file), "pt")
            else:
                import torch

                self._open[file] = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return self._open[file]

    def shape(self, name: str) -> tuple:
        handle = self._handle(self.files[name])
        if isinstance(handle, dict):
            return tuple(handle[name].shape)
        return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str):
        handle = self._handle(self.files[name])
        return handle[name] if isinstance(handle, dict) else handle.get_tensor(name)


def _internlm2_split(wqkv, heads: int, kv_heads: int):
    """InternLM2's fused wqkv, laid out per KV head as [q x groups, k, v] (each head_dim rows), -> (q, k, v)."""
    groups = heads // kv_heads
    head_dim = wqkv.shape[0] // (kv_heads * (groups + 2))
    grouped = wqkv.reshape(kv_heads, groups + 2, head_dim, -1)
    return (grouped[:, :groups].reshape(heads * head_dim, -1), grouped[:, -2].reshape(kv_heads * head_dim, -1),
            grouped[:, -1].reshape(kv_heads * head_dim, -1))


VISION_RENAMES = [  # applied in order to the part after "vision_model."
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.position_embedding$", "embeddings.position_embeddings"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^encoder\.layers\.(\d+)\.ls(\d)$", r"encoder.layer.\1.lambda_\2"),
    (r"^encoder\.layers\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.projection_layer."),
    (r"^encoder\.layers\.(\d+)\.attn\.qkv\.", r"encoder.layer.\1.attention.qkv."),
    (r"^encoder\.layers\.(\d+)\.norm1\.", r"encoder.layer.\1.layernorm_before."),
    (r"^encoder\.layers\.(\d+)\.norm2\.", r"encoder.layer.\1.layernorm_after."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"encoder.layer.\1.mlp."),
]
INTERNLM2_RENAMES = [  # the part after "language_model." -> Llama's names (without "model.")
    (r"^model\.tok_embeddings\.", "embed_tokens."),
    (r"^model\.norm\.", "norm."),
    (r"^model\.layers\.(\d+)\.attention\.wo\.", r"layers.\1.self_attn.o_proj."),
    (r"^model\.layers\.(\d+)\.attention\.wqkv\.", r"layers.\1.self_attn.wqkv."),
    (r"^model\.layers\.(\d+)\.feed_forward\.w1\.", r"layers.\1.mlp.gate_proj."),
    (r"^model\.layers\.(\d+)\.feed_forward\.w3\.", r"layers.\1.mlp.up_proj."),
    (r"^model\.layers\.(\d+)\.feed_forward\.w2\.", r"layers.\1.mlp.down_proj."),
    (r"^model\.layers\.(\d+)\.attention_norm\.", r"layers.\1.input_layernorm."),
    (r"^model\.layers\.(\d+)\.ffn_norm\.", r"layers.\1.post_attention_layernorm."),
]


def _rename(name: str, rules) -> str | None:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, name)
        if count:
            return new
    return None


def plan_weights(source_names: list[str], family: str) -> dict[str, tuple[str, str | None]]:
    """{native name: (source name, part)}: part is None (copy), or 'q' / 'k' / 'v' of a fused projection.
    Raises ConversionError on a source tensor it does not know."""
    plan: dict[str, tuple[str, str | None]] = {}
    unknown = []
    for name in source_names:
        if name.startswith("vision_model."):
            new = _rename(name[len("vision_model."):], VISION_RENAMES)
            if new is None:
                unknown.append(name)
            elif ".attention.qkv." in new:
                for part in "qkv":
                    plan["model.vision_tower." + new.replace(".qkv.", f".{part}_proj.")] = (name, part)
            else:
                plan["model.vision_tower." + new] = (name, None)
        elif name.startswith("mlp1."):
            index, rest = name[len("mlp1."):].split(".", 1)
            layer = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}.get(index)
            if layer is None:
                unknown.append(name)
            else:
                plan[f"model.multi_modal_projector.{layer}.{rest}"] = (name, None)
        elif name.startswith("language_model."):
            rest = name[len("language_model."):]
            if rest.startswith(("lm_head.", "output.")):
                plan["lm_head." + rest.split(".", 1)[1]] = (name, None)
            elif family == "internlm2":
                new = _rename(rest, INTERNLM2_RENAMES)
                if new is None:
                    unknown.append(name)
                elif ".wqkv." in new:
                    for part in "qkv":
                        plan["model.language_model." + new.replace(".wqkv.", f".{part}_proj.")] = (name, part)
                else:
                    plan["model.language_model." + new] = (name, None)
            elif rest.startswith("model."):
                plan["model.language_model." + rest[len("model."):]] = (name, None)
            else:
                unknown.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise ConversionError(f"tensors this converter does not know: {', '.join(unknown[:8])}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    return plan


def _tensor(source: _Source, name: str, part: str | None, llm: dict, fused: dict):
    """The source tensor `name`, or its q / k / v `part` (a copy of its own). `fused` keeps the last fused tensor's
    three parts, so that each fused tensor is read and split once (the native q, k, v come one after the other)."""
    if part is None:
        return source.get(name)
    if name not in fused:
        fused.clear()
        tensor = source.get(name)
        if name.startswith("vision_model."):  # InternViT: [q; k; v] stacked along the output dimension
            parts = tensor.chunk(3, dim=0)
        else:
            parts = _internlm2_split(tensor, llm["num_attention_heads"],
                                     llm.get("num_key_value_heads") or llm["num_attention_heads"])
        fused[name] = dict(zip("qkv", parts))
    return fused[name][part].clone()  # not a view that keeps the whole fused tensor alive


# --- config -------------------------------------------------------------------------------------------------------
DROP_KEYS = {"_name_or_path", "_commit_hash", "architectures", "auto_map", "transformers_version", "torch_dtype",
             "dtype", "attn_implementation", "_attn_implementation", "_attn_implementation_autoset", "use_bfloat16",
             "use_flash_attn", "model_type", "bias", "id2label", "label2id", "task_specific_params", "problem_type",
             "tokenizer_class", "prefix", "finetuning_task", "tie_word_embeddings"}


def text_config(llm: dict) -> dict:
    """The native text config (a dict with model_type) of the chat layout's `llm_config`."""
    arch = llm["architectures"][0]
    model_type = SUPPORTED[arch][0]
    if arch == "InternLM2ForCausalLM":
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "rope_scaling", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range")
        text = {key: llm[key] for key in keys if key in llm}
        text.update(attention_bias=False, mlp_bias=False)
        text["head_dim"] = llm["hidden_size"] // llm["num_attention_heads"]
    else:
        text = {key: value for key, value in llm.items() if key not in DROP_KEYS and not key.startswith("_")}
    text.update(model_type=model_type, tie_word_embeddings=False, use_cache=True)
    if text.get("rope_scaling") is None:
        text.pop("rope_scaling", None)
    return text


def native_config(config: dict, image_token_id: int, dtype: str):
    from transformers import InternVLConfig

    vision, llm = config["vision_config"], config["llm_config"]
    size = config.get("force_image_size") or vision["image_size"]
    downsample = config.get("downsample_ratio", 0.5)
    native = InternVLConfig(
        vision_config=dict(
            hidden_size=vision["hidden_size"], num_hidden_layers=vision["num_hidden_layers"],
            num_attention_heads=vision["num_attention_heads"], intermediate_size=vision["intermediate_size"],
            hidden_act=vision.get("hidden_act", "gelu"), layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
            attention_bias=bool(vision.get("qkv_bias", True)), use_qk_norm=False, norm_type="layer_norm",
            image_size=size, patch_size=vision["patch_size"], num_channels=vision.get("num_channels", 3),
            use_absolute_position_embeddings=True,
        ),
        text_config=text_config(llm),
        image_token_id=image_token_id,
        image_seq_length=int((size // vision["patch_size"]) ** 2 * downsample**2),
        downsample_ratio=downsample,
        vision_feature_layer=config.get("select_layer", -1),
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    native.architectures = ["InternVLForConditionalGeneration"]
    native.dtype = dtype
    return native


# --- tokenizer, template, processor -------------------------------------------------------------------------------
def chat_template(template: ChatTemplate, system_message: str) -> str:
    """A Jinja chat template rendering what InternVL2's `model.chat` renders (SeparatorStyle.MPT): the system
    prompt, then each turn as role prefix + text + separator, and the assistant prefix to generate. An image item
    becomes `<IMG_CONTEXT>`, which the processor expands to `<img><IMG_CONTEXT>*N</img>` as `model.chat` does. A
    leading system message replaces the default one."""
    lit = lambda text: json.dumps(text)  # a Jinja string literal (JSON escapes are valid Jinja escapes)
    content = ("{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
               "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}{{ '<IMG_CONTEXT>' }}"
               "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}")
    return (
        "{%- set system = " + lit(system_message) + " -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}{%- set message = messages[0] -%}"
        "{%- set system -%}" + content + "{%- endset -%}{%- set messages = messages[1:] -%}{%- endif -%}"
        "{{ " + lit(template.system) + " + system + " + lit(template.sep) + " }}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}{{ " + lit(template.assistant) + " }}"
        "{%- else -%}{{ " + lit(template.user) + " }}{%- endif -%}"
        + content + "{{ " + lit(template.sep) + " }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + lit(template.assistant) + " }}{%- endif -%}"
    )


def _spm_adds_dummy_prefix(model_file: Path) -> bool:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    return proto.normalizer_spec.add_dummy_prefix


def load_source_tokenizer(folder: Path, config: dict):
    """The source's tokenizer as a transformers fast tokenizer, without running its remote code. InternLM2's
    (`InternLM2Tokenizer`, a SentencePiece BPE model with BOS added) is read as a Llama SentencePiece tokenizer; when
    its model adds no dummy prefix (InternLM2's does not), neither does the fast one."""
    from transformers import AutoTokenizer, LlamaTokenizer

    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text()) if (folder / "tokenizer_config.json").is_file() else {}
    cls = tokenizer_config.get("tokenizer_class") or ""
    try:
        if cls.startswith("InternLM2") or config["llm_config"]["architectures"][0] == "InternLM2ForCausalLM":
            tokenizer = LlamaTokenizer.from_pretrained(str(folder), add_bos_token=tokenizer_config.get("add_bos_token", True),
                                                       add_eos_token=tokenizer_config.get("add_eos_token", False))
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:  # noqa: BLE001
        raise ConversionError(f"{folder}: cannot read its tokenizer ({type(error).__name__}: {error})") from None
    if (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file():
        from tokenizers import decoders, pre_tokenizers

        backend = tokenizer.backend_tokenizer
        if not _spm_adds_dummy_prefix(folder / "tokenizer.model"):
            backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
            backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        elif cls.startswith("InternLM2"):  # its slow tokenizer runs SentencePiece on every piece between special
            # tokens, so each gets the dummy prefix (checked on a scratch InternLM2 tokenizer with the prefix on)
            backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    return tokenizer


def convert_tokenizer(folder: Path, config: dict, template: ChatTemplate, out: Path):
    """Save the fast tokenizer to `out` with the image tokens named for InternVLProcessor and the template's
    separator as end-of-sequence token; returns it reloaded from `out`."""
    from transformers import AutoTokenizer

    tokenizer = load_source_tokenizer(folder, config)
    missing = [t for t in ("<img>", "</img>", "<IMG_CONTEXT>", template.sep) if tokenizer.convert_tokens_to_ids(t) in
               (None, tokenizer.unk_token_id) or t not in tokenizer.get_vocab()]
    if missing:
        raise ConversionError(f"{folder}: its tokenizer lacks {', '.join(missing)} (an InternVL2 tokenizer has them)")
    if "<video>" not in tokenizer.get_vocab():  # the native processor needs a video token; never in a prompt here
        tokenizer.add_tokens(["<video>"], special_tokens=True)
    tokenizer.eos_token = template.sep
    if tokenizer.pad_token is None:
        tokenizer.pad_token = template.sep
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(out))
    path = out / "tokenizer_config.json"
    saved = json.loads(path.read_text())
    saved.update(IMAGE_TOKENS, model_specific_special_tokens=dict(IMAGE_TOKENS), padding_side="left")
    saved.pop("auto_map", None)
    saved["tokenizer_class"] = "TokenizersBackend"  # tokenizer.json as saved; a named class would rebuild its parts
    path.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
    for name in ("tokenizer.model", "tokenization_internlm2.py", "tokenization_internlm2_fast.py"):
        (out / name).unlink(missing_ok=True)  # the fast tokenizer is all that is read; no remote code
    return AutoTokenizer.from_pretrained(str(out))


def build_processor(tokenizer, config: dict, template: ChatTemplate, system_message: str, image_seq_length: int):
    from transformers import InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from occmllm.processors import image_only_processor_class

    size = config.get("force_image_size") or config["vision_config"]["image_size"]
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": size, "width": size}, crop_to_patches=bool(config.get("dynamic_image_size", True)),
        min_patches=int(config.get("min_dynamic_patch", 1)), max_patches=int(config.get("max_dynamic_patch", 12)),
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, resample=3, do_convert_rgb=True,  # 3 = bicubic
    )
    return image_only_processor_class(InternVLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=image_seq_length,
        chat_template=chat_template(template, system_message))


# --- conversion ---------------------------------------------------------------------------------------------------
def source_fingerprint(folder: Path) -> str:
    """A hash of the source's config and the names, sizes and times of its weight and tokenizer files."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    digest.update((folder / "config.json").read_bytes())
    for file in sorted(folder.iterdir()):
        if file.is_file() and (file.suffix in (".safetensors", ".bin", ".json", ".model", ".txt")):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    digest.update(str(FORMAT_VERSION).encode())
    return digest.hexdigest()


def convert(src: str | os.PathLike, dst: str | os.PathLike, system_message: str | None = None,
            progress: bool = True) -> Path:
    """Convert the chat-layout folder `src` into a native InternVL folder `dst` (created; must not hold a model).
    `system_message`: the one the chat template uses; default: the config's `system_message`, else InternVL2's."""
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    src, dst = Path(src), Path(dst)
    if not src.is_dir() or not (src / "config.json").is_file():
        raise ConversionError(f"{src}: not a model folder (no config.json)")
    if not is_chat_layout(src):
        found = read_config(src).get("model_type") or read_config(src).get("architectures")
        raise ConversionError(f"{src}: not an InternVL chat-layout checkpoint (found {found!r}). {_supported_text()}")
    config = check_chat_layout(src)
    if (dst / "config.json").is_file():
        raise ConversionError(f"{dst}: already holds a model; choose an empty or new folder")
    template = TEMPLATES[config["template"]]
    system_message = system_message if system_message is not None else config.get("system_message", INTERNVL2_SYSTEM_MESSAGE)
    arch = config["llm_config"]["architectures"][0]
    family = "internlm2" if arch == "InternLM2ForCausalLM" else SUPPORTED[arch][0]
    dst.mkdir(parents=True, exist_ok=True)

    tokenizer = convert_tokenizer(src, config, template, dst)
    source = _Source(src)
    dtype_name = str(config.get("torch_dtype") or config["llm_config"].get("torch_dtype") or "bfloat16")
    native = native_config(config, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), dtype_name)
    plan = plan_weights(list(source.files), family)
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in InternVLForConditionalGeneration(native).state_dict().items()}
    missing, extra = sorted(set(expected) - set(plan)), sorted(set(plan) - set(expected))
    if missing or extra:
        raise ConversionError(f"{src}: weights do not match the native model: missing {missing[:6]}, unexpected "
                              f"{extra[:6]}")
    names = list(expected)
    written, shard, size, fused = [], {}, 0, {}  # written: (file, names, bytes) of each shard on disk

    def write_shard():  # as soon as it is full: the whole model is never in memory at once
        file = dst / f".shard-{len(written) + 1:05d}.safetensors"
        save_file(shard, str(file), metadata={"format": "pt"})
        written.append((file, list(shard), size))

    bar = _progress(len(names), "converting weights", progress)
    for name in names:
        source_name, part = plan[name]
        tensor = _tensor(source, source_name, part, config["llm_config"], fused)
        if tuple(tensor.shape) != expected[name]:
            raise ConversionError(f"{src}: {source_name} has shape {tuple(tensor.shape)}, the native {name} needs "
                                  f"{expected[name]}")
        shard[name] = tensor.contiguous()
        size += tensor.numel() * tensor.element_size()
        if size >= SHARD_BYTES:
            write_shard()
            shard, size = {}, 0
        bar.update(1)
    bar.close()
    if shard or not written:
        write_shard()
    if len(written) == 1:
        written[0][0].rename(dst / "model.safetensors")
    else:
        weight_map = {}
        for index, (file, shard_names, _) in enumerate(written, 1):
            final = f"model-{index:05d}-of-{len(written):05d}.safetensors"
            file.rename(dst / final)
            weight_map.update({name: final for name in shard_names})
        (dst / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": sum(n for _, _, n in written)}, "weight_map": weight_map}, indent=2) + "\n")
    native.save_pretrained(str(dst))
    sep_id = tokenizer.convert_tokens_to_ids(template.sep)
    GenerationConfig(eos_token_id=sep_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                     do_sample=False).save_pretrained(str(dst))
    processor = build_processor(tokenizer, config, template, system_message, native.image_seq_length)
    processor.save_pretrained(str(dst))
    (dst / MARKER).write_text(json.dumps({
        "source": str(src.resolve()), "fingerprint": source_fingerprint(src), "format_version": FORMAT_VERSION,
        "language_model": arch, "template": config["template"], "system_message": system_message,
    }, indent=2, ensure_ascii=False) + "\n")
    return dst


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", disable=not enabled or total < 50, file=sys.stderr)


def cache_folder(src: Path) -> Path:
    """Where `converted_folder` keeps the conversion of `src`: inside it when writable, else under the cache."""
    if os.access(src, os.W_OK):
        return src / CACHE_NAME
    root = Path(os.environ.get("OCCMLLM_CACHE", Path.home() / ".cache" / "occmllm")) / "converted"
    tag = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    return root / f"{src.resolve().name}-{tag}"


def converted_folder(src: str | os.PathLike, progress: bool = True) -> Path:
    """The native folder of the chat-layout checkpoint `src`, converted on first use and reused while the source is
    unchanged. Safe with several processes (a lock; the folder appears complete or not at all)."""
    import fcntl

    src = Path(src)
    check_chat_layout(src)
    target = cache_folder(src)
    fingerprint = source_fingerprint(src)

    def ready() -> bool:
        marker = target / MARKER
        return marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint

    if ready():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return target
        print(f"converting {src} (InternVL chat layout) to transformers' InternVL in {target} (once) ...",
              file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            convert(src, work, progress=progress)
            umask = os.umask(0)
            os.umask(umask)
            work.chmod(0o777 & ~umask)  # mkdtemp made it 0700: others sharing the model folder read the cache too
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m occmllm.convert",
        description="Convert an InternVL2 chat-layout checkpoint (config.json with InternVLChatModel, as the paper's "
                    "released 1B/2B/4B/8B models are saved; Qwen2, InternLM2, Phi-3 or InternLM2.5 language model) "
                    "into transformers' native InternVL folder that --model of every tool reads. The tools also do "
                    "this by themselves on first use (cached in SRC/occmllm_native or ~/.cache/occmllm/converted).",
    )
    parser.add_argument("src", type=Path, help="the chat-layout checkpoint folder (e.g. an extracted outputdir-1b-...)")
    parser.add_argument("dst", type=Path, help="the folder to write the native model to (new or empty)")
    parser.add_argument("--system-message", help="system message of the chat template (default: the config's, "
                                                 "else InternVL2's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst, system_message=args.system_message, progress=not args.quiet)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    marker = json.loads((out / MARKER).read_text())
    print(f"wrote {out} ({size:.1f} MB): {marker['language_model']}, template {marker['template']}")


if __name__ == "__main__":
    main()
