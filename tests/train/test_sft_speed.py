"""The SFT input encoding marks exactly the answers, and a stage's time budget ends training (and its schedule) in time."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from occmllm import prompts
from occmllm.images import load_image
from train.data import DataDir, encode_sample, read_samples


def test_labels_are_exactly_the_answers_of_every_turn(tiny_model, toy_data):
    from occmllm.vlm import VLM

    processor = VLM.load(tiny_model).processor
    tokenizer = processor.tokenizer
    data = DataDir(toy_data)
    for kind in ("Q1", "Q1_Q6", "cot"):
        for sample in read_samples(data.require(kind, "train"), limit=4):
            encoded = encode_sample(processor, load_image(sample.image), sample.turns)
            ids, labels = encoded["input_ids"], encoded["labels"]
            spans, start = [], None  # contiguous labelled runs
            for i, label in enumerate(labels.tolist() + [-100]):
                if label != -100 and start is None:
                    start = i
                elif label == -100 and start is not None:
                    spans.append(tokenizer.decode(ids[start:i]))
                    start = None
            assert len(spans) == len(sample.turns)
            for text, (_, answer) in zip(spans, sample.turns):
                assert text.startswith(answer + tokenizer.eos_token), (text, answer)
    class_token = tokenizer.tokenize(prompts.identify_answer("bowl"))[3]
    assert tokenizer.convert_tokens_to_string([class_token]).strip() == "bowl"  # the class is one token to predict


def test_time_budget_stops_training_with_the_schedule_ended(tiny_model, toy_data, tmp_path):
    from train.sft import SFTConfig, train_sft

    samples = read_samples(DataDir(toy_data).require("Q1", "train"))
    start = time.time()
    train_sft(tiny_model, tmp_path, samples, SFTConfig(lr=1e-3, batch_size=4, epochs=10_000, time_budget_s=8))
    took = time.time() - start
    rows = list(csv.DictReader(open(tmp_path / "loss.csv")))
    planned = 10_000 * len(samples) // 4
    assert 40 <= len(rows) < planned
    assert took < 8 + 20  # the budget + loading and saving the tiny model (80,000 steps would take many minutes)
    assert float(rows[-1]["lr"]) < 1e-3 * 0.01  # the cosine reached its end at the fitted step count


def test_encoded_cache_gives_the_batches_of_the_streaming_path(tiny_model, toy_data):
    import torch

    from occmllm.vlm import VLM
    from train.data import EncodedCache, SFTDataset, collate

    processor = VLM.load(tiny_model).processor
    pad = processor.tokenizer.pad_token_id
    samples = read_samples(DataDir(toy_data).require("Q1_Q6", "train"), limit=6)
    dataset = SFTDataset(samples, processor)
    cache = EncodedCache.build(dataset, pad, "cpu", progress=False)
    for indices in ([0, 1, 2], [5, 3], [4]):
        streamed = collate([dataset[i] for i in indices], pad)
        cached = cache.batch(indices, "cpu")
        assert streamed.keys() == cached.keys()
        for key in streamed:
            assert streamed[key].shape == cached[key].shape, key
            tolerance = 2e-3 * streamed[key].abs().max() if key == "pixel_values" else 0  # kept in float16
            assert torch.allclose(streamed[key].to(cached[key].dtype), cached[key], atol=float(tolerance)), key
    flipped = cache.batch(list(range(6)) * 8, "cpu", hflip=True)["pixel_values"]
    plain = cache.batch(list(range(6)) * 8, "cpu")["pixel_values"]
    mirrored = [torch.equal(f, p.flip(-1)) and not torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert 0 < sum(mirrored) < len(mirrored)  # some images mirrored, some not


def test_encoded_cache_keeps_pixels_as_8_bit_levels_and_gives_back_the_processors_values(tiny_model, toy_data):
    """With the processor's normalisation known (pixel_lattice) the cache stores one byte per pixel value, half of
    float16's, and its batches carry the values the processor makes: exactly for an image at the tile size, within
    the resampling's rounding (at most half a level) for one that is resized."""
    from PIL import Image

    from occmllm.vlm import VLM
    from train.data import EncodedCache, SFTDataset, Sample, collate, pixel_lattice

    processor = VLM.load(tiny_model).processor
    pad = processor.tokenizer.pad_token_id
    lattice = pixel_lattice(processor)
    assert lattice is not None
    scale = float(lattice[0].max())
    samples = read_samples(DataDir(toy_data).require("Q1_Q6", "train"), limit=6)
    dataset = SFTDataset(samples, processor)
    cache = EncodedCache.build(dataset, pad, "cpu", progress=False, lattice=lattice)
    half = EncodedCache.build(dataset, pad, "cpu", progress=False)
    assert cache.tensors["pixel_values"].dtype == torch.uint8
    assert cache.tensors["pixel_values"].nbytes * 2 == half.tensors["pixel_values"].nbytes
    assert EncodedCache.bytes_needed(dataset, lattice=lattice) < EncodedCache.bytes_needed(dataset)
    assert 0 <= cache.pixel_error <= 0.5
    for indices in ([0, 1, 2], [5, 3]):
        streamed = collate([dataset[i] for i in indices], pad)["pixel_values"]
        cached = cache.batch(indices, "cpu")["pixel_values"]
        assert cached.dtype == torch.float32 and cached.shape == streamed.shape
        assert float((cached - streamed).abs().max()) <= (cache.pixel_error + 1e-3) * scale
    size = int(dataset[0]["pixel_values"].shape[-1])  # an image at the tile size is not resampled: exact levels
    tile = Path(toy_data) / "tile.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(tile)
    exact = SFTDataset([Sample(str(tile), samples[0].turns)], processor)
    cached = EncodedCache.build(exact, pad, "cpu", progress=False, lattice=lattice)
    assert cached.pixel_error < 1e-3
    assert torch.allclose(cached.batch([0], "cpu")["pixel_values"], exact[0]["pixel_values"], atol=1e-5)


def test_cached_and_streamed_training_agree(tiny_model, toy_data, tmp_path):
    from train.sft import SFTConfig, train_sft

    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=8)
    losses = {}
    for cache in ("none", "cpu"):
        train_sft(tiny_model, tmp_path / cache, samples, SFTConfig(lr=1e-3, batch_size=4, max_steps=4, cache=cache))
        losses[cache] = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / cache / "loss.csv"))]
    assert len(losses["none"]) == 4
    assert losses["none"] == __import__("pytest").approx(losses["cpu"], rel=2e-3)


def test_compiled_training_sees_only_full_batches(tiny_model, toy_data, tmp_path, monkeypatch):
    """With `compile` every batch has batch_size samples (a smaller last batch would make torch.compile compile the
    model again); without it the epoch's remainder is a batch of its own."""
    from train.data import EncodedCache
    from train.sft import SFTConfig, train_sft

    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=10)  # 10 = 3 batches of 3 + 1
    sizes, batch = [], EncodedCache.batch
    monkeypatch.setattr(EncodedCache, "batch", lambda self, indices, *a, **k: sizes.append(len(indices)) or
                        batch(self, indices, *a, **k))
    steps = {}
    for compiled in (False, True):
        sizes.clear()
        out = tmp_path / str(compiled)
        train_sft(tiny_model, out, samples, SFTConfig(lr=1e-3, batch_size=3, epochs=2, cache="cpu", compile=compiled))
        steps[compiled] = [r["epoch"] for r in csv.DictReader(open(out / "loss.csv"))]
        assert sorted(set(sizes)) == ([3] if compiled else [1, 3])
    assert len(steps[False]) == 8 and len(steps[True]) == 6  # 2 epochs of 4 batches / of 3 full ones
    assert float(steps[True][-1]) == 2.0


def test_stages_of_one_process_may_differ_in_precision():
    from train.common import make_accelerator

    assert make_accelerator(False).mixed_precision == "no"  # an fp32 stage (MPO, SCoRe) ...
    assert make_accelerator(True).mixed_precision == "bf16"  # ... then a bf16 SFT stage in the same run_all process


def test_random_augment_moves_and_recolours_every_image_and_keeps_the_object_centred_on_average():
    from train.data import random_augment

    torch.manual_seed(0)
    pixels = torch.zeros(64, 3, 32, 32)
    pixels[:, :, 12:20, 12:20] = 1.0  # a bright square in the middle of a dark image
    out = random_augment({"pixel_values": pixels.clone(), "input_ids": torch.ones(64, 5)})
    moved = out["pixel_values"]
    assert moved.shape == pixels.shape and moved.dtype == pixels.dtype
    assert torch.equal(out["input_ids"], torch.ones(64, 5))  # only the images change
    assert all(not torch.allclose(m, p, atol=1e-3) for m, p in zip(moved, pixels))  # every image changed
    # the square is still there (bright in the middle, on average over the batch), not smeared away or off-image
    centre = moved[:, :, 12:20, 12:20].mean() - moved[:, :, :4, :4].mean()
    assert centre > 0.5
    # brightness changes differ between images: the per-image means spread
    assert moved.mean(dim=(1, 2, 3)).std() > 0.05


def test_sft_with_augment_and_flips_trains_through_both_paths(tiny_model, toy_data, tmp_path):
    from safetensors.torch import load_file
    from train.sft import SFTConfig, train_sft

    samples = read_samples(DataDir(toy_data).require("Q1", "train"), limit=8)
    before = load_file(str(Path(tiny_model) / "model.safetensors"))
    for cache in ("none", "cpu"):
        out = train_sft(tiny_model, tmp_path / cache, samples,
                        SFTConfig(lr=1e-3, batch_size=4, max_steps=3, cache=cache, augment=True, hflip=True,
                                  parts=["vision", "projector", "lm"]))
        after = load_file(str(out / "model.safetensors"))
        assert any(not torch.equal(before[k], after[k]) for k in before if "vision" in k)
        losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / cache / "loss.csv"))]
        assert len(losses) == 3 and all(l == l and l < 50 for l in losses)  # finite losses


def test_time_budget_is_fitted_again_when_the_steps_slow_down(monkeypatch):
    """The first fit sees the fast probe steps; later fits see the real speed, so training ends near the budget."""
    from train import sft

    clock = [0.0]
    monkeypatch.setattr(sft.time, "time", lambda: clock[0])
    monkeypatch.setattr(sft, "BUDGET_REFIT", 1.0)
    budget, total, step, first_fit = sft.Budget(100.0, 0), 20_000, 0, None
    while step < total:
        step += 1
        clock[0] += 0.01 if step <= 40 else 0.02  # after the probe the steps take twice as long
        fitted = budget.fit(step, total)
        first_fit = first_fit or (fitted if fitted != total else None)
        total = fitted
    assert abs(first_fit - 10_000) <= 2  # what a single fit from the probe would have run: ~200 s
    assert 97 <= clock[0] <= 101  # fitted again: stops at the budget


def test_time_budget_never_asks_for_more_than_the_epochs():
    from train import sft

    budget = sft.Budget(1e6, 0)
    assert all(budget.fit(step, 500) <= 500 for step in range(1, 400))
