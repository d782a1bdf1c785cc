"""The SFT input encoding marks exactly the answers, and a stage's time budget ends training (and its schedule) in time."""

from __future__ import annotations

import csv
import time

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
