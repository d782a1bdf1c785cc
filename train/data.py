"""Training data: find the seed-format files of a dataset folder, check them before training, and encode
conversations into model inputs with labels on the answers only.

A dataset folder is what `python -m data_tools.synth --out DIR` writes or what the app exports: a `meta.json`
(InternVL meta file) naming JSONL files such as `train_Q1.jsonl`, `train_Q1_Q6.jsonl`,
`train_Q1_Q6_balanced_dpo.jsonl`, `train_Q1_Q6_Q0_balanced.jsonl`, `test_Q1.jsonl`, each with its image root.
The seed's own names (`train_Q1_10140.jsonl`, `train_Q1_Q6_Q0_4_balanced_10140.jsonl`) are found too.
An export of the app (`python -m data_tools.export`) names its files by meta entry instead (`annotated_sft`, ...):
EXPORT_ENTRIES says which entry is read as which kind, SCORE_EXPORT_ENTRIES what stage 4a reads instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from occmllm import formats, prompts
from occmllm.dataset import EXPERT_RENDERS, sample_path
from train.common import TrainError

# data kind -> the part of the file name after "{split}_"
KINDS = {
    "Q1": r"Q1",
    "Q1_Q6": r"Q1_Q6",
    "dpo": r"Q1_Q6_balanced_dpo",
    "cot": r"Q1_Q6_Q0(?:_\d+)?_balanced",
    "attributes": r"attributes",
    "self_correction": r"self_correction",  # [Q1, a wrong answer, "check again", the right one]: the app's export
}
# the app's export (python -m data_tools.export), train split: kind -> the meta entries read as it, the first present.
# SFT reads the annotators' corrections as Q1 answers; SCoRe (stage 4a) scores its attempts against every judged
# item's accepted or corrected answer (`annotated_labels`), the corrections alone in an export without it.
EXPORT_ENTRIES = {"dpo": ("annotated_preferences",), "Q1": ("annotated_sft",),
                  "self_correction": ("annotated_self_correction",)}
SCORE_EXPORT_ENTRIES = {**EXPORT_ENTRIES, "Q1": ("annotated_labels", "annotated_sft")}
EXPORT_NAMES = {name for names in SCORE_EXPORT_ENTRIES.values() for name in names}


@dataclass
class Source:
    """One annotation file and the folder its `image` names are relative to."""

    kind: str
    split: str
    annotation: Path
    image_root: Path


class DataDir:
    """A dataset folder with a meta.json; `source(kind, split)` finds a file, `check(...)` validates files.
    `export_entries`: which meta entries of an export are read as which kind (EXPORT_ENTRIES, SCORE_EXPORT_ENTRIES)."""

    def __init__(self, root: str | Path, export_entries: dict[str, tuple[str, ...]] = EXPORT_ENTRIES):
        self.root, self.export_entries = Path(root), export_entries
        meta_path = self.root / "meta.json"
        if not self.root.is_dir():
            raise TrainError(f"{self.root}: data folder not found (make one with python -m data_tools.synth --out DIR)")
        if not meta_path.is_file():
            raise TrainError(f"{self.root}: no meta.json (a dataset folder from data_tools.synth or the app's export)")
        try:
            self.meta = formats.read_meta(meta_path)
        except formats.FormatError as error:
            raise TrainError(str(error)) from None
        self.meta_path = meta_path

    @property
    def is_export(self) -> bool:
        """An export of the app's annotations (its files named by meta entry: annotated_sft, ...)."""
        return bool(EXPORT_NAMES & set(self.meta))

    def _resolve(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else (self.root / path if (self.root / path).exists() or not path.exists() else path)

    def source(self, kind: str, split: str) -> Source | None:
        pattern = re.compile(rf"^{split}_{KINDS[kind]}(?:_\d+)?(?:\.sample)?\.jsonl$")
        for entry in self.meta.values():
            annotation = self._resolve(entry.annotation)
            if pattern.match(annotation.name):
                return Source(kind, split, annotation, self._resolve(entry.root))
        for name in self.export_entries.get(kind, ()) if split == "train" else ():  # an export: the first present
            entry = self.meta.get(name)
            if entry is not None:
                return Source(kind, split, self._resolve(entry.annotation), self._resolve(entry.root))
        return None

    def require(self, kind: str, split: str) -> Source:
        source = self.source(kind, split)
        if source is None:
            names = ", ".join(Path(e.annotation).name for e in self.meta.values())
            raise TrainError(f"{self.meta_path}: empty split: no {split!r} file of kind {kind!r} "
                             f"(expected {split}_{KINDS[kind].split('(')[0]}.jsonl; the meta names {names})")
        return source

    def check(self, needed: list[tuple[str, str]]) -> list[Source]:
        """Validate every (kind, split) file with data_tools.validate (format, classes, images). Raises TrainError
        listing up to 20 problems as `file:line: message`."""
        return check_sources([self.require(kind, split) for kind, split in dict.fromkeys(needed)], self.meta_path)


def stage_data_dir(kind: str, root: str | Path) -> DataDir:
    """The DataDir a stage of `kind` reads: on an export, SCoRe (4a) reads the judged items' labels as its Q1 data."""
    return DataDir(root, SCORE_EXPORT_ENTRIES if kind == "score" else EXPORT_ENTRIES)


def check_sources(sources: list[Source], meta_path: Path) -> list[Source]:
    """`DataDir.check` of sources already found (each file validated once, however many stages read it)."""
    from occmllm.validate import validate

    sources = list({(s.annotation, s.image_root): s for s in sources}.values())
    errors = []
    for source in sources:
        if not source.annotation.is_file():
            errors.append(f"{meta_path}: annotation file {source.annotation} not found")
            continue
        if not source.image_root.is_dir():
            errors.append(f"{meta_path}: image root {source.image_root} is not a folder")
            continue
        report = validate([source.annotation], images_root=source.image_root)
        errors += report.errors
        if not report.errors and report.records.get(str(source.annotation), 0) == 0:
            errors.append(f"{source.annotation}: empty split: no records")
    if errors:
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise TrainError("bad training data, nothing was trained:\n" + "\n".join(errors[:20]) + more)
    return sources


# --- samples ---------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One SFT sample: an image file and its (question, answer) turns."""

    image: Path
    turns: list[tuple[str, str]]
    id: str | None = None


def conversation_turns(conv: formats.Conversation) -> list[tuple[str, str]]:
    body = [t for t in conv.conversations if t["from"] != formats.SYSTEM]
    return [(q["value"], a["value"]) for q, a in zip(body[::2], body[1::2])]


RENDER_FOLDERS = {"oracle": ("renders",), "expert": (EXPERT_RENDERS,), "both": ("renders", EXPERT_RENDERS)}


def read_samples(source: Source, limit: int | None = None, renders: bool | str = False) -> list[Sample]:
    """The SFT samples of a file; with `renders`, every Q1 sample again on its object render, so that the model can
    read the 3D route's images: `true` / "oracle" = the ground-truth render the generator wrote
    (`{split}/renders/{id}.png` beside the image folder), "expert" = the learned expert's render
    (`{split}/expert_renders/{id}.png`, written by `python -m data_tools.expert_renders`), "both"."""
    folders = RENDER_FOLDERS["oracle"] if renders is True else RENDER_FOLDERS.get(renders, ()) if renders else ()
    if renders and not folders:
        raise TrainError(f"renders must be true, oracle, expert or both, not {renders!r}")
    samples, split_folder = [], source.image_root.parent  # DIR/{split}, whose images/ the file names
    for conv in formats.read_conversations(source.annotation)[:limit]:
        image = source.image_root / conv.images[0]
        turns = conversation_turns(conv)
        samples.append(Sample(image, turns, conv.id))
        if folders and turns[0][0] == prompts.Q1:
            for folder in folders:
                render = sample_path(split_folder.parent, split_folder.name, folder, Path(conv.images[0]).stem)
                if render.is_file():
                    samples.append(Sample(render, turns[:1], conv.id))
    expert_renders = split_folder / EXPERT_RENDERS
    if renders in ("expert", "both") and not any(expert_renders.glob("*.png")):
        raise TrainError(f"{expert_renders}: no expert renders; make them with "
                         f"python -m data_tools.expert_renders --data DIR --split {source.split}")
    return samples


def read_stage_samples(data: DataDir, kinds, limit: int | None = None, renders: bool | str = False,
                       extra_data=()) -> list[Sample]:
    """An SFT or SCoRe stage's samples: those of each of its data `kinds` (`renders`: the Q1 samples again on their
    renders) and of each `extra_data` kind (e.g. [attributes]: the paper's "Supervise Description"), `limit` of each."""
    samples = [s for kind in kinds for s in read_samples(data.require(kind, "train"), limit, renders)]
    for kind in extra_data or ():
        samples += read_samples(data.require(kind, "train"), limit)
    return samples


def read_pairs(source: Source, limit: int | None = None) -> list[tuple[Path, formats.PreferencePair]]:
    return [(source.image_root / pair.images[0], pair) for pair in formats.read_preferences(source.annotation)[:limit]]


# --- encoding --------------------------------------------------------------------------------------
def render(processor, turns: list[tuple[str, str | None]]) -> str:
    """The chat text of `turns` [(question, answer or None)], rendered the way occmllm.vlm asks questions."""
    from occmllm.vlm import to_messages

    *history, (question, answer) = turns
    messages = to_messages(question, history)
    if answer is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return processor.apply_chat_template(messages, tokenize=False)


def _text_length(processor, text: str) -> int:
    """Tokens of `text` without expanding its image placeholder (the tokenizer alone: cheap, no image work)."""
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_sample(processor, image, turns: list[tuple[str, str]], last_only: bool = False) -> dict[str, torch.Tensor]:
    """Model inputs for one conversation: input_ids, attention_mask, pixel values (and any other image keys),
    labels = the answer tokens (each answer with its end-of-turn token), -100 elsewhere; with `last_only`, the last
    answer's tokens only (the earlier answers are context, e.g. an annotated wrong first attempt).

    One processor call (the image work) for the whole conversation; the answer spans come from the tokenizer alone:
    every prefix of the chat holds the one image of the first turn, so the processor adds the same number of image
    tokens to each of them as to the full text (that number = processor length - tokenizer length of the full text)."""
    full = render(processor, turns)
    inputs = processor(text=[full], images=[[image]], return_tensors="pt")
    ids = inputs["input_ids"][0]
    image_tokens = len(ids) - _text_length(processor, full)
    cuts = []
    for i in range(len(turns)):
        cuts.append(render(processor, turns[:i] + [(turns[i][0], None)]))
        if i < len(turns) - 1:
            cuts.append(render(processor, turns[: i + 1]))
    lengths = [_text_length(processor, cut) + image_tokens for cut in cuts] + [len(ids)]
    labels = torch.full_like(ids, -100)
    spans = list(zip(lengths[::2], lengths[1::2]))
    for start, end in spans[-1:] if last_only else spans:
        labels[start:end] = ids[start:end]
    if not (labels != -100).any():
        raise TrainError(f"the chat template leaves no answer tokens for {turns!r}")
    sample = {k: v[0] if k in ("input_ids", "attention_mask") else v for k, v in inputs.items()}
    sample["labels"] = labels
    return sample


def collate(samples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token tensors; concatenate image tensors (pixel values of all images, in order)."""
    longest = max(len(s["input_ids"]) for s in samples)
    batch: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        batch[key] = torch.stack([torch.cat([s[key], s[key].new_full((longest - len(s[key]),), fill)]) for s in samples])
    for key in samples[0]:
        if key not in batch:
            batch[key] = torch.cat([s[key] for s in samples])
    return batch


class SFTDataset(torch.utils.data.Dataset):
    """Samples encoded on the fly (in DataLoader workers)."""

    def __init__(self, samples: list[Sample], processor):
        self.samples, self.processor = samples, processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from occmllm.images import load_image

        sample = self.samples[index]
        return encode_sample(self.processor, load_image(sample.image), sample.turns)


def pixel_lattice(processor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, offset), each (channels, 1, 1), with pixel_values = level * scale + offset for 8-bit levels 0-255,
    where the processor's image processor only rescales and normalises 8-bit pixels (an image already at its tile
    size is not resampled: its pixel values are exactly such levels); None where it is not known to."""
    images = getattr(processor, "image_processor", None)
    mean, std = getattr(images, "image_mean", None), getattr(images, "image_std", None)
    if images is None or not getattr(images, "do_rescale", False) or mean is None or std is None or \
            not getattr(images, "do_normalize", False):
        return None
    mean, std = (torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1) for v in (mean, std))
    return (float(images.rescale_factor) / std).float(), (-mean / std).float()


def _pixel_levels(pixels: np.ndarray, lattice) -> tuple[np.ndarray, float]:
    """Pixel values -> (uint8 levels, the largest distance of a value from its level, in levels)."""
    scale, offset = (t.numpy() for t in lattice)
    levels = (pixels.astype(np.float32) - offset) / scale
    rounded = np.clip(np.rint(levels), 0, 255)
    return rounded.astype(np.uint8), float(np.abs(levels - rounded).max()) if levels.size else 0.0


def _as_numpy(items: list[dict[str, torch.Tensor]], lattice=None) -> list[dict]:
    """Worker -> main process as numpy arrays (pickled by value): thousands of tensors shared through file
    descriptors run out of them ("received 0 items of ancdata"). Floating image tensors in float16, or with a
    `lattice` (pixel_lattice) the pixel values as uint8 levels (a quarter of float32's bytes) and, under the key
    PIXEL_ERROR, how far they were from those levels."""
    out = []
    for item in items:
        row = {k: (v.half() if v.is_floating_point() else v).numpy() for k, v in item.items() if
               not (lattice is not None and k == "pixel_values")}
        if lattice is not None and "pixel_values" in item:
            row["pixel_values"], row[PIXEL_ERROR] = _pixel_levels(item["pixel_values"].float().numpy(), lattice)
        out.append(row)
    return out


PIXEL_ERROR = "__pixel_error__"


class EncodedCache:
    """Every sample of a dataset encoded once and kept as stacked tensors (pixel values as their 8-bit levels where
    the processor's normalisation is known, `pixel_lattice`, else in float16), so that an epoch costs index lookups
    instead of image decoding, resizing and chat templating. The default model's stage 1 is bound by that work
    otherwise (~4.5 ms per sample per CPU core, the GPU idle most of the time). 8-bit levels take half of float16's
    memory: 107,000 samples of one 256 px tile take 21 GB instead of 42, which fit in half an H100's memory.

    Works when every sample has image tensors of one shape (the default model: one 256 px tile); `build` returns
    None otherwise (a real InternVL with a varying number of tiles), and training streams as before.
    `device` "cuda" keeps the tensors in GPU memory, "cpu" in host memory."""

    TOKEN_KEYS = ("input_ids", "attention_mask", "labels")

    def __init__(self, tensors: dict[str, torch.Tensor], lengths: torch.Tensor, lattice=None,
                 pixel_error: float = 0.0):
        self.tensors, self.lengths = tensors, lengths  # token rows are padded already; lengths give the masks
        self.lattice = lattice  # (scale, offset) when pixel_values hold 8-bit levels
        self.pixel_error = pixel_error  # the largest distance of a stored pixel value from its true value, in levels

    def __len__(self) -> int:
        return len(self.lengths)

    @staticmethod
    def bytes_needed(dataset, probe: int = 4, lattice=None) -> int:
        """An estimate of the cache's size from the first samples (pixel values as 8-bit levels with a `lattice`)."""
        sizes = []
        for i in range(min(probe, len(dataset))):
            item = dataset[i]
            sizes.append(sum(v.numel() * (1 if lattice is not None and k == "pixel_values" else
                                          2 if v.is_floating_point() else v.element_size())
                             for k, v in item.items() if k not in EncodedCache.TOKEN_KEYS) + 8 * 3 * len(item["input_ids"]))
        return int(max(sizes) * len(dataset) * 1.2) if sizes else 0

    @classmethod
    def build(cls, dataset, pad_id: int, device: str | torch.device = "cpu", num_workers: int = 0,
              progress: bool = True, lattice=None) -> "EncodedCache | None":
        """`lattice` (pixel_lattice of the dataset's processor): keep the pixel values as 8-bit levels."""
        import functools

        from tqdm.auto import tqdm

        n = len(dataset)
        loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=num_workers,
                                             collate_fn=functools.partial(_as_numpy, lattice=lattice))
        arrays: dict[str, np.ndarray] = {}
        tokens: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        shapes = None
        index, pixel_error = 0, 0.0
        with tqdm(total=n, desc="encoding samples once", unit="sample", disable=not progress) as bar:
            for items in loader:
                for item in items:
                    pixel_error = max(pixel_error, item.pop(PIXEL_ERROR, 0.0))
                    image = {k: v for k, v in item.items() if k not in cls.TOKEN_KEYS}
                    signature = {k: (v.shape, v.dtype) for k, v in image.items()}
                    if shapes is None:
                        shapes = signature
                        arrays = {k: np.empty((n, *v.shape), v.dtype) for k, v in image.items()}
                    elif signature != shapes:
                        return None  # images of different shapes (tiles): stream instead
                    for k, v in image.items():
                        arrays[k][index] = v  # numpy: a plain copy, no thread pool to fight over
                    tokens.append(item["input_ids"])
                    labels.append(item["labels"])
                    index += 1
                bar.update(len(items))
        lengths = torch.tensor([len(t) for t in tokens])
        longest = int(lengths.max()) if n else 0
        ids = np.full((n, longest), pad_id, dtype=np.int64)
        lab = np.full((n, longest), -100, dtype=np.int64)
        for i, (t, l) in enumerate(zip(tokens, labels)):
            ids[i, : len(t)], lab[i, : len(l)] = t, l
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        tensors["input_ids"], tensors["labels"] = torch.from_numpy(ids), torch.from_numpy(lab)
        if str(device) != "cpu":
            tensors = {k: v.to(device) for k, v in tensors.items()}
        return cls(tensors, lengths, lattice if "pixel_values" in tensors else None, pixel_error)

    def batch(self, indices: list[int], device: str | torch.device, dtype: torch.dtype = torch.float32,
              hflip: bool = False, augment: bool = False) -> dict[str, torch.Tensor]:
        """The batch of `indices` on `device`, right-padded to its longest sample like `collate`; with `hflip`,
        each image is mirrored left-right with probability 1/2 (the classes do not depend on it); with `augment`,
        `random_augment` moves, scales and recolours every image."""
        index = torch.as_tensor(indices)
        longest = int(self.lengths[index].max())
        batch = {}
        for key, value in self.tensors.items():
            rows = value[index.to(value.device)]
            if key in ("input_ids", "labels"):
                rows = rows[:, :longest]
            rows = rows.to(device, non_blocking=True)
            if key == "pixel_values" and self.lattice is not None:  # 8-bit levels -> the processor's values
                scale, offset = (t.to(device) for t in self.lattice)
                rows = (rows.float() * scale + offset).to(dtype)
            elif rows.is_floating_point():
                rows = rows.to(dtype)
            if key not in ("input_ids", "labels"):
                rows = rows.flatten(0, 1)  # per-sample image tensors -> concatenated, as collate does
            batch[key] = rows
        batch["attention_mask"] = (torch.arange(longest, device=device)[None, :]
                                   < self.lengths[index].to(device)[:, None]).long()
        return augment_batch(batch, hflip, augment)


def augment_batch(batch: dict[str, torch.Tensor], hflip: bool, augment: bool) -> dict[str, torch.Tensor]:
    """The image augmentations an SFT stage asks for, applied to a batch on its device."""
    if hflip:
        batch = random_hflip(batch)
    if augment:
        batch = random_augment(batch)
    return batch


def random_hflip(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each image of the batch mirrored left-right with probability 1/2 (the object classes do not depend on it;
    meant for one-tile models: the tiles of a multi-tile image would be flipped one by one)."""
    pixels = batch.get("pixel_values")
    if pixels is not None:
        flip = torch.rand(len(pixels), device=pixels.device) < 0.5
        batch["pixel_values"] = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    return batch


def random_augment(batch: dict[str, torch.Tensor], scale: tuple[float, float] = (0.8, 1.15), shift: float = 0.1,
                   rotate_deg: float = 15.0, colour: float = 0.25) -> dict[str, torch.Tensor]:
    """Each image of the batch zoomed (`scale`), moved (up to `shift` of its size), turned (up to `rotate_deg`) and
    recoloured (brightness, contrast and saturation each by up to `colour`; 1 in 10 grey), on the batch's device.
    The images are the processor's normalized pixel values; the colour changes act on them directly (an affine change
    of every channel), which is what matters for a model that only ever sees normalized values. For one-tile models,
    like `random_hflip`: a small vision tower trained from scratch otherwise learns the training photos by heart."""
    pixels = batch.get("pixel_values")
    if pixels is None:
        return batch
    import torch.nn.functional as F

    n, device, dtype = len(pixels), pixels.device, pixels.dtype
    x = pixels.float()

    def uniform(lo, hi):
        return torch.empty(n, device=device).uniform_(lo, hi)

    zoom = 1 / uniform(*scale)
    angle = uniform(-rotate_deg, rotate_deg) * math.pi / 180
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos, -sin, uniform(-shift, shift) * 2], 1),
                         torch.stack([sin, cos, uniform(-shift, shift) * 2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    grey = x.mean(dim=1, keepdim=True)
    saturation = uniform(1 - colour, 1 + colour)[:, None, None, None]
    saturation = torch.where(torch.rand(n, 1, 1, 1, device=device) < 0.1, torch.zeros_like(saturation), saturation)
    x = grey + (x - grey) * saturation
    x = mean + (x - mean) * uniform(1 - colour, 1 + colour)[:, None, None, None]
    x = x + uniform(-colour, colour)[:, None, None, None] * 2  # brightness: +-0.5 normalized = +-13% of the range
    batch["pixel_values"] = x.to(dtype)
    return batch
