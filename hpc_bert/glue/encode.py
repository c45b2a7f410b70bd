"""GLUE examples -> model inputs: the --max_train_samples subset and tokenization (plain or as
prompts) into a map-style dataset that the HF Trainer pads per batch."""
from __future__ import annotations

import random

from hpc_bert.glue import prompt as glue_prompt
from hpc_bert.glue.tasks import Example, TaskSpec

# The subset picked by --max_train_samples is the same for every --seed, so seeds differ
# only in initialisation and order, as in a real seed sweep.
SUBSET_SEED = 0


def subset(examples: list[Example], limit: int | None) -> list[Example]:
    if limit is None or limit >= len(examples):
        return examples
    keep = sorted(random.Random(SUBSET_SEED).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


class EncodedTask:
    """Tokenized examples as a map-style dataset of dicts; padding happens per batch."""

    def __init__(self, encodings: dict[str, list], labels: list | None):
        self.encodings, self.labels = encodings, labels  # labels None: a test set

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def encode(examples: list[Example], task: TaskSpec, tokenizer, max_len: int, use_token_types: bool,
           prompt_template: str | None = None) -> EncodedTask:
    if prompt_template:  # one cloze text per example, the pair's texts included
        texts_a, texts_b = glue_prompt.render_prompts(examples, prompt_template, tokenizer, max_len), None
    else:
        texts_a = [e.text_a for e in examples]
        texts_b = [e.text_b or "" for e in examples] if task.text_b is not None else None
    # Explicit padding/truncation override whatever the saved tokenizer.json asks for.
    enc = dict(tokenizer(texts_a, texts_b, truncation=True, max_length=max_len, padding=False))
    if not use_token_types:
        enc.pop("token_type_ids", None)
    if any(e.label == "" for e in examples):  # test files carry no labels
        labels = None
    elif task.is_regression:
        labels = [float(e.label) for e in examples]
    else:
        index = {label: i for i, label in enumerate(task.labels)}
        labels = [index[e.label] for e in examples]
    return EncodedTask(enc, labels)
