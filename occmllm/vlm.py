"""One backend for any transformers image-text-to-text checkpoint (InternVL, Qwen2-VL / Qwen2.5-VL, LLaVA, SmolVLM /
Idefics3, the embedded default model), loaded by local path through the Auto classes and the checkpoint's own chat
template. InternVL2 checkpoints in InternVL's chat layout (the paper's released models) are converted once into
transformers' InternVL by `occmllm.convert` and the converted folder is loaded.

    >>> from occmllm.vlm import VLM
    >>> vlm = VLM.load("path/to/checkpoint")          # or VLM.load_default()
    >>> answer, history = vlm.chat(image, prompts.Q1, return_history=True)
    >>> vlm.chat(image, prompts.Q6, history=history)  # second turn: the image prefix's KV cache is reused
    >>> vlm.generate_batch(images, [prompts.Q1] * len(images))
    >>> vlm.sample(image, prompts.Q1, n=4, temperature=1.0)   # distinct candidates with log-probabilities

Device and dtype: CUDA when available in bfloat16, else CPU in float32. Questions are written the seed's way (the
`<image>` placeholder marks where the image goes in the first turn; when it is missing, the image comes first, as
InternVL's `model.chat` does); they become chat messages with an image item, rendered by the checkpoint's template.

No torchvision: image processors load with the PIL backend, and a processor class that wants a video processor is
replaced by an image-only subclass registered with `AutoProcessor`. A processor that comes back as a bare tokenizer
is refused with a clear error instead of failing later.

KV-cache reuse, precisely: `chat` keeps the cache of the last conversation (prompt + answer tokens). When the next
call has the same image (same pixels) and a prompt that starts with the cached tokens (the next turn of the same
conversation), it crops the cache to the common prefix, skips the image encoder (no pixel values are sent) and feeds
only the new tokens. `VLM.last_reused_tokens` says how many tokens were reused (0 = full recompute). Families whose
position ids depend on the image (Qwen2-VL's M-RoPE) recompute. Batched generation never reuses caches.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from occmllm import prompts
from occmllm.convert import WEIGHT_FILES
from occmllm.default_model import DEFAULT_MODEL
from occmllm.images import load_image
from occmllm.processors import image_only_processor_class

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
NO_PREFIX_REUSE = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}  # M-RoPE position ids are built from the image grid


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message names the folder and what is wrong with it."""


@dataclass
class Candidate:
    """One sampled answer: its text, the sum of its tokens' log-probabilities (temperature 1, no top-p), its
    number of tokens."""

    text: str
    logprob: float
    num_tokens: int


def _torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return is_torchvision_available()


def _processor_class_for(folder: Path, model_type: str) -> type | None:
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES, processor_class_from_name

    names = []
    for file in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / file
        if path.is_file():
            try:
                name = json.loads(path.read_text()).get("processor_class")
            except (json.JSONDecodeError, AttributeError):
                name = None
            if name:
                names.append(name.removesuffix("ImageOnly"))
    names.append(PROCESSOR_MAPPING_NAMES.get(model_type))
    for name in names:
        if name and (cls := processor_class_from_name(name)) is not None:
            return cls
    return None


def load_processor(folder: Path, model_type: str):
    """The checkpoint's processor, image-only where torchvision is missing; refuses a bare tokenizer."""
    cls = _processor_class_for(folder, model_type)
    if cls is None:
        raise ModelLoadError(f"{folder}: no processor class for model type {model_type!r}")
    # Image-only where torchvision is missing, and for folders saved without a video processor (the default model,
    # or any folder built on a machine without torchvision) even where torchvision is there.
    if not _torchvision_available() or not (folder / "video_preprocessor_config.json").is_file():
        cls = image_only_processor_class(cls)
    try:
        processor = cls.from_pretrained(str(folder))
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(f"{folder}: cannot load its processor {cls.__name__} ({type(error).__name__}: {error})") from None
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"{folder}: the processor loaded as {type(processor).__name__} without an image processor "
            "(a transformers processor without torchvision can silently degrade to a tokenizer); "
            "check preprocessor_config.json / processor_config.json"
        )
    if getattr(processor, "chat_template", None) is None and getattr(processor.tokenizer, "chat_template", None) is None:
        raise ModelLoadError(f"{folder}: no chat template (chat_template.jinja or 'chat_template' in the processor config)")
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def check_model_folder(folder: Path) -> dict:
    """The folder's config.json as a dict, or ModelLoadError naming what is missing or wrong."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if not folder.exists():
        raise ModelLoadError(f"{folder}: model folder not found")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: is a file; a model is a folder with config.json, weights and a tokenizer")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{folder}: missing config.json (is this a transformers model folder?)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{config_path}:{error.lineno}: not valid JSON ({error.msg})") from None
    from occmllm import convert

    if convert.is_chat_layout(folder):  # InternVL2 chat layout (the paper's models): converted on load
        try:
            return convert.check_chat_layout(folder)
        except convert.ConversionError as error:
            raise ModelLoadError(str(error)) from None
    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        kind = f"model_type {model_type!r}" if model_type else "no model_type"
        raise ModelLoadError(
            f"{folder}: not a vision-language model ({kind}; expected an image-text-to-text type such as "
            "internvl, qwen2_vl, qwen2_5_vl, llava, smolvlm, idefics3)"
        )
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelLoadError(f"{folder}: no weights (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder}: no tokenizer (expected tokenizer.json or tokenizer_config.json + vocabulary)")
    if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise ModelLoadError(f"{folder}: no image processor (missing preprocessor_config.json / processor_config.json)")
    return config


def _has_byte_fallback(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteFallback" in str(backend.decoder)


def decode_byte_fallback(tokenizer, ids: list[int]) -> str:
    """Decode like SentencePiece (the slow tokenizers of InternLM2, Llama, Phi-3): byte pieces `<0xNN>` become bytes,
    `▁` a space, and the bytes are read as UTF-8 with one U+FFFD per invalid byte. The fast tokenizers' ByteFallback
    decoder turns a whole run of bytes into U+FFFDs when any of it is invalid, which changes a conversation's next
    prompt; special tokens are skipped."""
    special = set(tokenizer.all_special_ids)
    data = bytearray()
    for token in tokenizer.convert_ids_to_tokens([i for i in ids if i not in special]):
        if token is None:
            continue
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            data.append(int(token[3:5], 16))
        else:
            data += token.replace("\u2581", " ").encode("utf-8")
    text, index = [], 0
    while index < len(data):  # SentencePiece's rule: a byte that does not start a valid character is one U+FFFD
        lead = data[index]
        size = 1 if lead < 0x80 else 2 if 0xC2 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF5 else 0
        try:
            text.append(bytes(data[index:index + size]).decode("utf-8") if size else "\ufffd")
        except UnicodeDecodeError:
            text.append("\ufffd")
            size = 1
        index += max(size, 1)
    return "".join(text)


def _image_key(image: Image.Image) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() + f"{image.size}{image.mode}"


def to_messages(question: str, history: list[tuple[str, str]] | None = None) -> list[dict]:
    """Chat messages for the conversation `history` [(question, answer), ...] followed by `question`.

    The first question carries the image: where its `<image>` placeholder is, or first when it has none (as
    InternVL's `model.chat`). Later questions lose any placeholder. The training stages use the same function so that
    training and inference render identical prompts."""
    turns = list(history or []) + [(question, None)]
    messages = []
    for index, (text, answer) in enumerate(turns):
        if index == 0:
            if prompts.IMAGE_TOKEN not in text:
                text = f"{prompts.IMAGE_TOKEN}\n{text}"
            content = []
            for position, part in enumerate(text.split(prompts.IMAGE_TOKEN)):
                if position > 0:
                    content.append({"type": "image"})
                if part:
                    content.append({"type": "text", "text": part})
        else:
            content = [{"type": "text", "text": prompts.strip_image(text)}]
        messages.append({"role": "user", "content": content})
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


class VLM:
    """A loaded vision-language model: `chat`, `generate_batch`, `sample`. Build it with `VLM.load(...)`."""

    def __init__(self, model, processor, name: str, trained: bool = True, max_new_tokens: int = 32):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.trained = trained
        self.max_new_tokens = max_new_tokens
        self.model_type = model.config.model_type
        # Dynamic-NTK RoPE (InternLM2's) changes the frequencies once a sequence passes max_position_embeddings, and
        # LongRoPE (Phi-3's) once it passes original_max_position_embeddings: a cached prefix was rotated with other
        # frequencies than a full recompute would use, so past that length such models recompute (below it the
        # frequencies are the plain ones and reuse is exact)
        text_config = model.config.get_text_config()
        rope = getattr(text_config, "rope_parameters", None) or {}
        rope_type = str(rope.get("rope_type", ""))
        self.prefix_reuse = self.model_type not in NO_PREFIX_REUSE
        self._reuse_below = None
        if "dynamic" in rope_type:
            self._reuse_below = getattr(text_config, "max_position_embeddings", None) or 0
        elif "longrope" in rope_type:
            self._reuse_below = rope.get("original_max_position_embeddings") or getattr(
                text_config, "original_max_position_embeddings", None) or 0
        self._byte_fallback = _has_byte_fallback(processor.tokenizer)
        self.last_reused_tokens = 0
        self._cache = None  # (image key, token ids 1-D tensor, DynamicCache) of the last `chat` conversation
        import inspect  # transformers >= 5.2x names the generate/forward cache argument `cache`, before `past_key_values`

        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    # --- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path_or_id: str | os.PathLike, device: str | None = None, dtype: torch.dtype | str | None = None,
             max_new_tokens: int = 32) -> "VLM":
        """Load a checkpoint folder (or a hub id where a network exists). Raises ModelLoadError with a clear message."""
        from transformers import AutoModelForImageTextToText

        from occmllm.default_model import read_marker

        text = str(path_or_id)
        folder = Path(text).expanduser()
        is_local = folder.exists() or text.startswith((".", "/", "~")) or os.environ.get("HF_HUB_OFFLINE") == "1"
        if is_local:
            config = check_model_folder(folder)
            from occmllm import convert

            if convert.is_chat_layout(folder):  # converted once into transformers' InternVL, then the cache is read
                try:
                    folder = convert.converted_folder(folder)
                except convert.ConversionError as error:
                    raise ModelLoadError(str(error)) from None
                config = check_model_folder(folder)
            source = str(folder)
        else:  # a hub id: let transformers download it
            try:
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(text))
            except Exception as error:  # noqa: BLE001
                raise ModelLoadError(f"{text}: not a local folder and not downloadable ({error})") from None
            config, source = check_model_folder(folder), str(folder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        processor = load_processor(folder, config["model_type"])
        try:
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
        except Exception as error:  # noqa: BLE001
            raise ModelLoadError(f"{folder}: cannot load the model weights ({type(error).__name__}: {error})") from None
        model.to(device)
        marker = read_marker(folder)
        trained = True if marker is None else bool(marker.get("trained"))
        if marker and marker.get("max_new_tokens"):  # the default model's answers are short: stop garbage early
            max_new_tokens = min(max_new_tokens, int(marker["max_new_tokens"]))
        return cls(model, processor, name=text, trained=trained, max_new_tokens=max_new_tokens)

    @classmethod
    def load_named(cls, name: str | os.PathLike | None, device: str | None = None) -> "VLM":
        """`load(name)`, or the embedded default model (`load_default`) for None, "" or DEFAULT_MODEL ("default"):
        what every command's --model and the app's model box take."""
        if name is None or str(name).strip() in ("", DEFAULT_MODEL):
            return cls.load_default(device=device)
        return cls.load(name, device=device)

    @classmethod
    def load_default(cls, device: str | None = None, dtype=None) -> "VLM":
        """The embedded default model: trained weights from `occmllm/default_model/weights/` when they ship, else an
        untrained (random, seeded) build in a cache folder, with a warning and `trained=False`."""
        from occmllm.default_model import WEIGHTS_DIR, build_default_model

        if (WEIGHTS_DIR / "config.json").is_file():
            vlm = cls.load(WEIGHTS_DIR, device=device, dtype=dtype)
        else:
            cache = Path(os.environ.get("OCCMLLM_CACHE", Path.home() / ".cache" / "occmllm")) / "default_untrained"
            if not (cache / "config.json").is_file():
                build_default_model(cache)
            vlm = cls.load(cache, device=device, dtype=dtype)
            vlm.trained = False
        vlm.name = "default"
        if not vlm.trained:
            warnings.warn("the default model is UNTRAINED (random weights): its answers mean nothing until the "
                          "training stages ship weights to occmllm/default_model/weights", stacklevel=2)
        return vlm

    @property
    def device(self) -> torch.device:
        return self.model.device

    def describe(self) -> str:
        """One line for a UI or CLI: name, family, device, dtype, trained or not."""
        state = "" if self.trained else " [UNTRAINED: random weights]"
        return f"{self.name} ({self.model_type}, {self.device}, {self.model.dtype}){state}"

    # --- inputs ------------------------------------------------------------------------------------
    def _prompt(self, question: str, history) -> str:
        messages = to_messages(question, history)
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except AttributeError:  # an image-only processor whose apply_chat_template reads its video processor
            template = self.processor.chat_template or self.tokenizer.chat_template
            return self.tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                                      tokenize=False)

    def _inputs(self, images: list[Image.Image], texts: list[str]):
        try:
            inputs = self.processor(images=[[image] for image in images], text=texts, return_tensors="pt",
                                    padding=True)
        except (ValueError, TypeError):  # processors that want a flat list of images
            inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(self.model.dtype)
        return inputs

    def _decode(self, token_ids: torch.Tensor) -> list[str]:
        if self._byte_fallback:
            return [decode_byte_fallback(self.tokenizer, row).strip() for row in token_ids.tolist()]
        return [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    # --- chat --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def chat(self, image, question: str, history: list[tuple[str, str]] | None = None, return_history: bool = False,
             max_new_tokens: int | None = None):
        """Greedy answer to `question` about `image` after `history` [(q, a), ...], like the seed's `model.chat`.
        Returns the answer, or (answer, history + [(question, answer)]) with `return_history=True`."""
        image = load_image(image)
        history = list(history or [])
        inputs = self._inputs([image], [self._prompt(question, history)])
        key = _image_key(image)
        ids = inputs["input_ids"][0]
        kwargs, self.last_reused_tokens = dict(inputs), 0
        new_tokens = max_new_tokens or self.max_new_tokens
        within = self._reuse_below is None or len(ids) + new_tokens <= self._reuse_below
        if self.prefix_reuse and within and self._cache is not None and self._cache[0] == key:
            cached_ids, cache = self._cache[1], self._cache[2]
            n = min(len(cached_ids), len(ids) - 1)
            common = int((cached_ids[:n] == ids[:n]).cumprod(0).sum()) if n > 0 else 0
            image_token_id = getattr(self.model.config, "image_token_id", None) or getattr(
                self.model.config, "image_token_index", None)
            image_end = int((ids == image_token_id).nonzero().max()) + 1 if image_token_id is not None and (
                ids == image_token_id).any() else len(ids)
            if common >= image_end:
                if common < cache.get_seq_length():
                    cache.crop(common - cache.get_seq_length())  # negative = tokens to drop (old and new API)
                kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                          self._cache_kwarg: cache}
                self.last_reused_tokens = common
        output = self.model.generate(**kwargs, max_new_tokens=new_tokens, do_sample=False,
                                     return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
        sequence = output.sequences[0]
        answer = self._decode(sequence[None, len(ids):])[0]
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        if self.prefix_reuse and cache is not None and hasattr(cache, "crop"):
            self._cache = (key, sequence[: cache.get_seq_length()].clone(), cache)
        else:
            self._cache = None
        history.append((question, answer))
        return (answer, history) if return_history else answer

    def forget(self) -> None:
        """Drop the cached conversation prefix (frees memory)."""
        self._cache = None

    # --- batched generation ------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_batch(self, images: list, questions: list[str], histories: list | None = None,
                       max_new_tokens: int | None = None, with_logprobs: bool = False):
        """Greedy answers for a batch, left-padded, one `generate` call. `histories[i]` is image i's earlier turns.
        With `with_logprobs=True` returns (answers, logprobs): each answer's log-probability under the model (the sum
        over its generated tokens up to and including the end-of-sequence token), how sure the model is of it."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        if not images:
            return ([], np.zeros(0)) if with_logprobs else []
        images = [load_image(image) for image in images]
        histories = histories or [None] * len(images)
        texts = [self._prompt(q, h) for q, h in zip(questions, histories)]
        inputs = self._inputs(images, texts)
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                     do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
                                     return_dict_in_generate=True, output_logits=with_logprobs)
        generated = output.sequences[:, inputs["input_ids"].shape[1]:]
        answers = self._decode(generated)
        if not with_logprobs:
            return answers
        tokens = generated[:, :len(output.logits)]  # one raw-logit step per generated token
        logits = torch.stack(output.logits, 1).float()  # (batch, steps, vocab)
        chosen = logits.gather(-1, tokens[..., None])[..., 0] - logits.logsumexp(-1)
        eos = self.model.generation_config.eos_token_id
        eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=tokens.device)
        is_eos = torch.isin(tokens, eos)
        before = is_eos.long().cumsum(1) - is_eos.long()  # end-of-sequence tokens before this one
        return answers, (chosen * (before == 0)).sum(1).cpu().numpy().astype(np.float64)  # up to the first EOS

    # --- scoring -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def answer_logprobs(self, images: list, question: str, answers: list[str], batch_size: int = 64,
                        histories: list[list[tuple[str, str]]] | None = None) -> np.ndarray:
        """(len(images), len(answers)) log-probabilities of each answer text (teacher-forced, its tokens only) as the
        reply to `question` about each image (after that image's earlier turns `histories[i]` when given). Padding
        side does not matter: the answer is the last tokens of each row.

        Each image and its prompt are read once and the answers scored from that prefix's KV cache (one short row per
        answer), instead of reading image and prompt again for every answer: the eight classes cost about a fifth of
        eight full passes (class_posterior of one photo: 34 ms against 152 for the default model on a 2-core CPU). Families that cannot reuse a prefix (M-RoPE), prompts of unequal length in a batch and
        answers that would not follow the prompt as tokens of their own are scored with full passes."""
        images = [load_image(image) for image in images]
        prompts_ = [self._prompt(question, h) for h in histories] if histories else \
            [self._prompt(question, None)] * len(images)
        scores = np.zeros((len(images), len(answers)), dtype=np.float64)
        if not images or not answers:
            return scores
        after = {prompt: self._answer_tokens(prompt, answers) for prompt in dict.fromkeys(prompts_)}  # once each
        per = max(1, batch_size // len(answers))  # images per cached batch: about batch_size answer rows
        for start in range(0, len(images), per):
            rows = list(range(start, min(start + per, len(images))))
            batch_images, batch_prompts = [images[i] for i in rows], [prompts_[i] for i in rows]
            cached = self._cached_answer_logprobs(batch_images, batch_prompts, answers, after)
            scores[rows] = cached if cached is not None else self._full_answer_logprobs(
                batch_images, batch_prompts, answers, batch_size, after)
        return scores

    def _answer_tokens(self, prompt: str, answers: list[str]) -> list[list[int]] | None:
        """Each answer's token ids as they follow `prompt` when the two are tokenized together; None when an
        answer's first token merges with the prompt's end (then the prompt's tokens are not a prefix)."""
        head = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        found = []
        for answer in answers:
            ids = self.tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
            if ids[:len(head)] != head or len(ids) == len(head):
                return None
            found.append(ids[len(head):])
        return found

    def _tokens_after(self, prompts_: list[str], answers: list[str], after: dict | None) -> dict:
        """{prompt: the answers' tokens after it (_answer_tokens)}, from `after` where the caller has them."""
        after = dict(after or {})
        for prompt in dict.fromkeys(prompts_):
            if prompt not in after:
                after[prompt] = self._answer_tokens(prompt, answers)
        return after

    def _cached_answer_logprobs(self, images: list, prompts_: list[str], answers: list[str],
                                after: dict | None = None) -> np.ndarray | None:
        """answer_logprobs for one batch from the prompts' KV cache, or None where that cannot be exact. `after`:
        {prompt: the answers' tokens after it}, made once by answer_logprobs."""
        if not self.prefix_reuse:
            return None
        after = self._tokens_after(prompts_, answers, after)
        tokens = after[prompts_[0]]
        if any(after[prompt] is None or after[prompt] != tokens for prompt in prompts_):
            return None
        inputs = self._inputs(images, prompts_)
        prefix, n = inputs["input_ids"].shape[1], len(tokens)
        lengths = torch.tensor([len(t) for t in tokens], device=self.device)
        longest = int(lengths.max())
        if not bool(inputs["attention_mask"].all()) or (
                self._reuse_below is not None and prefix + longest > self._reuse_below):
            return None
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, longest), pad, dtype=torch.long, device=self.device)
        for k, answer in enumerate(tokens):
            ids[k, :len(answer)] = torch.tensor(answer, device=self.device)
        cache = self._conversation_prefix(images, inputs["input_ids"])
        if cache is not None:  # the last `chat` read this image and prompt: score from its cache, the image unread
            return self._answers_after_last_token(cache, inputs["input_ids"][0, -1], ids, lengths)
        output = self.model(**inputs, use_cache=True)
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        first = output.logits[:, -1].float().log_softmax(-1)[:, ids[:, 0]]  # (images, n): each answer's first token
        if longest > 1:  # the rest from one short row per (image, answer): image 0's n answers, then image 1's, ...
            cache.batch_repeat_interleave(n)
            rows = ids.repeat(len(images), 1)
            real = (torch.arange(longest, device=self.device) < lengths[:, None]).repeat(len(images), 1)
            mask = torch.cat([torch.ones(len(rows), prefix, dtype=torch.long, device=self.device), real.long()], 1)
            logprobs = self.model(input_ids=rows, attention_mask=mask, use_cache=False,
                                  **{self._cache_kwarg: cache}).logits.float().log_softmax(-1)
            following = logprobs[:, :-1].gather(-1, rows[:, 1:, None])[..., 0] * real[:, 1:]
            first = first + following.sum(1).view(len(images), n)
        return first.detach().cpu().numpy().astype(np.float64)

    def _conversation_prefix(self, images: list, input_ids: torch.Tensor):
        """A copy of the last `chat` conversation's KV cache cropped to all but the last token of `input_ids`, when
        that conversation was about this one image and began with these tokens (the class probabilities asked for
        right after the answer, as the pipeline does); None otherwise. The conversation's own cache is left whole."""
        import copy

        if len(images) != 1 or self._cache is None or self._cache[0] != _image_key(images[0]):
            return None
        cached_ids, cache = self._cache[1], self._cache[2]
        ids = input_ids[0]
        if len(cached_ids) < len(ids) or not torch.equal(cached_ids[:len(ids)].to(ids.device), ids) or not (
                hasattr(cache, "crop") and hasattr(cache, "batch_repeat_interleave")):
            return None
        prefix = copy.deepcopy(cache)
        prefix.crop(len(ids) - 1 - prefix.get_seq_length())
        return prefix

    def _answers_after_last_token(self, cache, last: torch.Tensor, ids: torch.Tensor,
                                  lengths: torch.Tensor) -> np.ndarray:
        """(1, answers) log-probabilities of the answers `ids` (rows, padded; `lengths` real tokens each) after a
        prompt whose KV cache `cache` holds every token but the `last`: one row per answer, the last prompt token
        first."""
        n, longest = ids.shape
        prefix = cache.get_seq_length()
        cache.batch_repeat_interleave(n)
        rows = torch.cat([last.reshape(1, 1).expand(n, 1).to(ids.device), ids], 1)
        real = torch.arange(longest + 1, device=self.device) <= lengths[:, None]
        mask = torch.cat([torch.ones(n, prefix, dtype=torch.long, device=self.device), real.long()], 1)
        logprobs = self.model(input_ids=rows, attention_mask=mask, use_cache=False,
                              **{self._cache_kwarg: cache}).logits.float().log_softmax(-1)
        scores = (logprobs[:, :-1].gather(-1, rows[:, 1:, None])[..., 0] * real[:, 1:]).sum(1)
        return scores[None].detach().cpu().numpy().astype(np.float64)

    def _full_answer_logprobs(self, images: list, prompts_: list[str], answers: list[str], batch_size: int,
                              after: dict | None = None) -> np.ndarray:
        """answer_logprobs by a full pass over image, prompt and answer for every (image, answer) pair. An answer's
        tokens are counted as they follow the prompt (`after[prompt]`; a SentencePiece tokenizer gives an answer
        alone one more token, its leading space, which after the prompt is not there), as the answer alone
        tokenizes where they merge with the prompt's end."""
        after = self._tokens_after(prompts_, answers, after)

        def lengths(prompt: str) -> list[int]:
            tokens = after[prompt] or [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
            return [len(t) for t in tokens]

        counts = {prompt: lengths(prompt) for prompt in dict.fromkeys(prompts_)}
        pairs = [(i, k) for i in range(len(images)) for k in range(len(answers))]
        scores = np.zeros(len(pairs), dtype=np.float64)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            inputs = self._inputs([images[i] for i, _ in chunk], [prompts_[i] + answers[k] for i, k in chunk])
            logprobs = self.model(**inputs).logits.float().log_softmax(-1)
            for row, (i, k) in enumerate(chunk):
                real = inputs["attention_mask"][row].nonzero()[:, 0]  # positions of real tokens, in order
                positions = real[-counts[prompts_[i]][k]:]
                tokens = inputs["input_ids"][row, positions]
                scores[start + row] = float(logprobs[row, positions - 1].gather(-1, tokens[:, None]).sum())
        return scores.reshape(len(images), len(answers))

    def class_posterior(self, images: list, classes: tuple[str, ...] | None = None, batch_size: int = 64) -> np.ndarray:
        """(len(images), len(classes)) probabilities of "The object is {class}." as the Q1 answer, normalised over
        the classes: how sure the model is of each object, used to fuse the photo's and the render's readings."""
        classes = classes or prompts.CLASSES
        scores = self.answer_logprobs(images, prompts.Q1, [prompts.identify_answer(c) for c in classes], batch_size)
        scores -= scores.max(1, keepdims=True)
        probs = np.exp(scores)
        return probs / probs.sum(1, keepdims=True)

    def clear_probability(self, images: list, histories: list[list[tuple[str, str]]]) -> np.ndarray:
        """(len(images),) P("Yes.") / (P("Yes.") + P("No.")) as the clarity answer (Q6) after each image's earlier
        turns `histories[i]` (its Q1 turn): how sure the model's self-assessment is. Right after the conversation's
        own Q6 answer the last one comes from its KV cache (answer_logprobs)."""
        scores = self.answer_logprobs(images, prompts.Q6, [prompts.clarity_answer(True), prompts.clarity_answer(False)],
                                      histories=histories)
        return 1 / (1 + np.exp(scores[:, 1] - scores[:, 0]))

    # --- sampling ----------------------------------------------------------------------------------
    def sample(self, image, question: str, n: int = 4, temperature: float = 1.0, top_p: float = 1.0,
               history: list[tuple[str, str]] | None = None, max_new_tokens: int | None = None,
               max_rounds: int = 4) -> list[Candidate]:
        """Up to `n` distinct answers sampled at `temperature` / `top_p`, each with its log-probability under the model
        (temperature 1), best first. Samples more rounds (up to `max_rounds`) while fewer than `n` are distinct; a
        model that is sure of one answer returns fewer than `n`."""
        return self.sample_batch([image], question, n, temperature, top_p, history, max_new_tokens, max_rounds)[0]

    @torch.inference_mode()
    def sample_batch(self, images: list, question: str, n: int = 4, temperature: float = 1.0, top_p: float = 1.0,
                     history: list[tuple[str, str]] | None = None, max_new_tokens: int | None = None,
                     max_rounds: int = 4) -> list[list[Candidate]]:
        """`sample` for several images and one question in one `generate` call per round (n sequences per image):
        for each image, up to `n` distinct answers, best first. Rounds go on while any image has fewer than `n`."""
        images = [load_image(image) for image in images]
        inputs = self._inputs(images, [self._prompt(question, history)] * len(images))  # one prompt: no padding
        prompt_length = inputs["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        found: list[dict[str, Candidate]] = [{} for _ in images]
        for _ in range(max_rounds):
            output = self.model.generate(
                **inputs, do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=n,
                max_new_tokens=max_new_tokens or self.max_new_tokens, return_dict_in_generate=True,
                output_logits=True, pad_token_id=self.tokenizer.pad_token_id,
            )
            new_tokens = output.sequences[:, prompt_length:]  # rows: image 0's n samples, then image 1's, ...
            logits = torch.stack(output.logits, dim=1).float()  # (rows, steps, vocab), raw: temperature 1
            token_logprobs = logits.log_softmax(-1).gather(-1, new_tokens[..., None])[..., 0]
            ended = (new_tokens == eos).int().cumsum(1)
            keep = (ended == 0) | ((ended == 1) & (new_tokens == eos))  # tokens up to and including the first eos
            keep &= new_tokens != self.tokenizer.pad_token_id if self.tokenizer.pad_token_id != eos else keep
            for row, (text, row_logprobs, row_keep) in enumerate(zip(self._decode(new_tokens), token_logprobs, keep)):
                if text not in found[row // n]:
                    found[row // n][text] = Candidate(text, float(row_logprobs[row_keep].sum()), int(row_keep.sum()))
            if all(len(f) >= n for f in found):
                break
        return [sorted(f.values(), key=lambda c: c.logprob, reverse=True)[:n] for f in found]
