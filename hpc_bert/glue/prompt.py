"""Prompt-based fine-tuning: classify with the pretrained MLM head instead of a new one.

A head-based fine-tune puts a randomly initialised classifier on the [CLS] vector, which an
MLM-only pretraining never trained. Prompt-based fine-tuning (LM-BFF, Gao et al. 2021)
rewrites each example as a cloze, e.g. ``<sentence> It was [MASK] .``, and takes the MLM
head's logits of one label word per class ("terrible" / "great") at the mask as the class
logits. Fine-tuning then starts from what pretraining learnt about the mask slot, which is
worth most when labels are few and the model is small.

Templates name their slots ``{text_a}``, ``{text_b}`` (pair tasks) and ``{mask}``; the
defaults are the paper's manual templates and label words, lower-cased so that they are
single tokens of an uncased vocabulary (CoLA's "incorrect" becomes "wrong" for the same reason).
"""
from __future__ import annotations

import string

from hpc_bert.errors import ConfigError, UserError
from hpc_bert.glue.tasks import TaskSpec

# task -> (template, label words in the order of TaskSpec.labels)
DEFAULT_PROMPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "SST-2": ("{text_a} It was {mask} .", ("terrible", "great")),
    "CoLA": ("{text_a} This is {mask} .", ("wrong", "correct")),
    "MNLI": ("{text_a} ? {mask} , {text_b}", ("no", "yes", "maybe")),
    "QNLI": ("{text_a} ? {mask} , {text_b}", ("yes", "no")),
    "RTE": ("{text_a} ? {mask} , {text_b}", ("yes", "no")),
    "WNLI": ("{text_a} ? {mask} , {text_b}", ("no", "yes")),
    "MRPC": ("{text_a} {mask} , {text_b}", ("no", "yes")),
    "QQP": ("{text_a} {mask} , {text_b}", ("no", "yes")),
}
SLOTS = ("text_a", "text_b", "mask")


def resolve(task: TaskSpec, template: str | None, verbalizer: str | None) -> tuple[str, tuple[str, ...]]:
    """The template and label words to use, checked against the task; raises ConfigError."""
    if task.is_regression:
        raise ConfigError(f"--prompt scores label words, and {task.name} is a regression task: drop --prompt")
    default_template, default_words = DEFAULT_PROMPTS[task.name]
    template = template or default_template
    words = tuple(w.strip() for w in verbalizer.split(",")) if verbalizer else default_words
    slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    unknown = [s for s in slots if s not in SLOTS]
    if unknown:
        raise ConfigError(f"--prompt_template has slot {{{unknown[0]}}}: use only {{text_a}}, {{text_b}} and {{mask}}")
    needed = ["text_a", "mask"] + (["text_b"] if task.text_b is not None else [])
    for name in needed:
        if slots.count(name) != 1:
            raise ConfigError(f"--prompt_template {template!r} must hold {{{name}}} exactly once for {task.name}: "
                              f"e.g. {default_template!r}")
    if "text_b" in slots and task.text_b is None:
        raise ConfigError(f"--prompt_template has {{text_b}} but {task.name} has one sentence per example: "
                          f"e.g. {default_template!r}")
    if len(words) != task.num_labels or not all(words):
        raise ConfigError(f"--verbalizer needs one word per label of {task.name} ({', '.join(task.labels)}), "
                          f"got {verbalizer!r}: e.g. --verbalizer {','.join(default_words)}")
    return template, words


def label_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """One vocabulary id per label word; each word must be a single token."""
    ids = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
            raise UserError(f"--verbalizer word {word!r} is not one token of the tokenizer "
                            f"({tokenizer.convert_ids_to_tokens(pieces)}): choose words in its vocabulary")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise UserError(f"--verbalizer words {', '.join(words)} map to the same token: choose distinct words")
    return ids


def check_room(template: str, tokenizer, max_len: int) -> None:
    """The tokenizer has a mask token and the template alone leaves room for text."""
    if tokenizer.mask_token is None:
        raise UserError("--prompt needs a tokenizer with a mask token: use the pretraining's tokenizer")
    empty = len(tokenizer(template.format(text_a="", text_b="", mask=tokenizer.mask_token))["input_ids"])
    if empty >= max_len:
        raise UserError(f"--max_seq_length {max_len} leaves no room for text in the prompt template ({empty} tokens): "
                        "raise --max_seq_length or shorten --prompt_template")


def render_prompts(examples, template: str, tokenizer, max_len: int) -> list[str]:
    """Each example as its cloze text, shortened (longest text first) so that the mask survives
    truncation to max_len tokens."""
    check_room(template, tokenizer, max_len)

    def render(texts: dict[str, str]) -> str:
        return template.format(mask=tokenizer.mask_token, **texts)

    out = []
    for e in examples:
        texts = {"text_a": e.text_a, "text_b": e.text_b or ""}
        while (over := len(tokenizer(render(texts))["input_ids"]) - max_len) > 0:
            # cut the longest text at a token boundary of the original string (offsets keep it verbatim)
            name = max(texts, key=lambda k: len(texts[k]))
            enc = tokenizer(texts[name], add_special_tokens=False, return_offsets_mapping=True)
            keep = max(0, len(enc["input_ids"]) - over)
            texts[name] = texts[name][:enc["offset_mapping"][keep - 1][1]] if keep else ""
        out.append(render(texts))
    return out


def prompt_classifier(mlm, label_ids: list[int], mask_token_id: int):
    """Wrap a *ForMaskedLM model as a classifier over the label words' logits at the mask."""
    # torch, transformers and the model module load here, not at import: the grid and `--help` stay light
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput
    from hpc_bert.model.bert import mlm_head
    head = mlm_head(mlm)
    if head is None:
        raise UserError(f"--prompt needs a masked-LM checkpoint with a BERT or RoBERTa MLM head; "
                        f"{type(mlm).__name__} has none: drop --prompt")

    class PromptClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlm, self.config = mlm, mlm.config  # head is a part of mlm: not registered twice
            self.register_buffer("label_ids", torch.tensor(label_ids), persistent=False)

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
            hidden = self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                         token_type_ids=token_type_ids)[0]
            where = (input_ids == mask_token_id).int().argmax(dim=1)  # one mask per row (render_prompts)
            # the vocabulary projection only at the mask, not at every position: 3x faster for the tiny model
            logits = head(hidden[torch.arange(len(where), device=where.device), where])[:, self.label_ids]
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return PromptClassifier()
