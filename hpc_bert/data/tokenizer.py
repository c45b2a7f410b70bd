"""Fast BERT tokenizers from a vocab.txt, a tokenizer dir, a hub name, or trained on a corpus.

Every path returns a transformers *fast* tokenizer (Rust ``tokenizers`` backend) that
``save_pretrained`` can write next to a fine-tune checkpoint. A vocab.txt is turned into a
WordPiece tokenizer here rather than with ``BertTokenizerFast(vocab_file=...)``, which in
transformers 5 silently builds a 5-token vocabulary.

Trained vocabularies put the special tokens at BERT's ids ([PAD]=0, [unused0..98],
[UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), so the loader's and the model's defaults are
right for both the real BERT vocabulary and one trained offline.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from hpc_bert.atomic import write_text_atomic
from hpc_bert.errors import UserError
from hpc_bert.hub import unreachable_reason

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                  "sep_token": "[SEP]", "mask_token": "[MASK]"}
BERT_SPECIAL_LAYOUT = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MODEL_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
FETCH_HINT = "get BERT's vocab offline with `python -m hpc_bert.data fetch --sources vocab --output_dir DIR`"


def read_vocab_file(path: str) -> dict[str, int]:
    """vocab.txt (one token per line, line number = id) -> token -> id."""
    try:
        with open(path, encoding="utf-8") as fh:
            tokens = fh.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read vocab file {path} ({e}): pass a UTF-8 vocab.txt") from None
    if tokens and tokens[-1] == "":
        tokens.pop()  # trailing newline
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            raise UserError(f"vocab file {path} lists {token!r} twice (lines {vocab[token] + 1} and "
                            f"{index + 1}): every line must be a distinct token")
        vocab[token] = index
    missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
    if missing:
        raise UserError(f"vocab file {path} lacks {', '.join(missing)}: a BERT vocab needs "
                        f"{', '.join(SPECIAL_TOKENS.values())}")
    return vocab


def _looks_cased(vocab: dict[str, int]) -> bool:
    """An uncased vocab has (almost) no capital letters outside the [SPECIAL] tokens."""
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in words if any(c.isupper() for c in t))
    return upper > 0.01 * max(1, len(words))


def _wrap(backend) -> "PreTrainedTokenizerFast":  # noqa: F821
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=MODEL_INPUT_NAMES,
                                  **SPECIAL_TOKENS)
    return tok


def tokenizer_from_vocab(vocab: dict[str, int], lowercase: bool):
    """A BERT WordPiece fast tokenizer built from a token -> id dict."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    backend.decoder = decoders.WordPiece(prefix="##")
    tok = _wrap(backend)
    if len(tok) != len(vocab):
        raise UserError(f"tokenizer built from the vocab has {len(tok)} tokens, the vocab {len(vocab)}: "
                        "the vocab file is malformed (check for stray whitespace lines)")
    return tok


def tokenizer_from_vocab_file(path: str, lowercase: bool | None = None):
    vocab = read_vocab_file(path)
    if lowercase is None:
        lowercase = not _looks_cased(vocab)
    return tokenizer_from_vocab(vocab, lowercase)


def _from_hub(name: str):
    from transformers import AutoTokenizer

    try:  # the local HF cache first: works offline and costs no network round trip
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    why = unreachable_reason()
    if why:
        raise UserError(f"tokenizer {name!r} is not a local file or dir and {why}: pass a vocab.txt or "
                        f"tokenizer dir to --tokenizer_name ({FETCH_HINT})")
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load tokenizer {name!r} from the hub ({first[:200]}): check the name, "
                        "or pass a vocab.txt or tokenizer dir") from None


def load_tokenizer(name_or_path: str, lowercase: bool | None = None):
    """A fast tokenizer for a vocab.txt file, an HF tokenizer dir, or a hub name.

    ``lowercase`` applies to vocab files only; None guesses it from the vocab's letters.
    Padding and truncation baked into a tokenizer.json are switched off: samples are built
    from unpadded sentences.
    """
    if not name_or_path:
        raise UserError(f"no tokenizer given: pass --tokenizer_name VOCAB_TXT_OR_DIR ({FETCH_HINT})")
    path = os.path.expanduser(name_or_path)
    if os.path.isfile(path):
        tok = tokenizer_from_vocab_file(path, lowercase)
    elif os.path.isdir(path):
        has_json = os.path.isfile(os.path.join(path, "tokenizer.json"))
        has_vocab = os.path.isfile(os.path.join(path, "vocab.txt"))
        if has_json:
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load the tokenizer in {path} ({str(e).splitlines()[0][:200]}): "
                                "re-save it with save_pretrained or pass its vocab.txt") from None
        elif has_vocab:
            if lowercase is None:
                lowercase = _dir_lowercase(path)
            tok = tokenizer_from_vocab_file(os.path.join(path, "vocab.txt"), lowercase)
        else:
            raise UserError(f"tokenizer dir {path} has neither tokenizer.json nor vocab.txt: "
                            f"pass a tokenizer dir or a vocab.txt ({FETCH_HINT})")
    elif os.sep in name_or_path and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise UserError(f"tokenizer path {name_or_path} does not exist: pass an existing vocab.txt or "
                        f"tokenizer dir ({FETCH_HINT})")
    else:
        tok = _from_hub(name_or_path)
    return _checked(tok, name_or_path)


def _dir_lowercase(path: str) -> bool | None:
    config = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(config):
        try:
            with open(config) as fh:
                value = json.load(fh).get("do_lower_case")
            return None if value is None else bool(value)
        except (OSError, ValueError):
            return None
    return None


def _checked(tok, name: str):
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer {name!r} has no fast (Rust) version: pass a vocab.txt or a dir with tokenizer.json")
    missing = [k for k in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tok, f"{k}_id") is None]
    if missing:
        raise UserError(f"tokenizer {name!r} lacks {', '.join(missing)}: masked-LM samples need "
                        "[CLS], [SEP], [MASK] and [PAD] tokens")
    tok.backend_tokenizer.no_padding()
    tok.backend_tokenizer.no_truncation()
    return tok


def train_wordpiece(documents: Iterable[str], vocab_size: int = 30522, lowercase: bool = True,
                    min_frequency: int = 2, limit_alphabet: int = 1000):
    """Train a BERT WordPiece vocabulary on an iterable of documents (Rust, a few s per 10 MB)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    if vocab_size < len(BERT_SPECIAL_LAYOUT) + 50:
        raise UserError(f"--vocab_size {vocab_size} is too small: the special tokens alone take "
                        f"{len(BERT_SPECIAL_LAYOUT)} ids; pass e.g. --vocab_size 30522")
    backend = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               limit_alphabet=limit_alphabet, special_tokens=BERT_SPECIAL_LAYOUT,
                               continuing_subword_prefix="##", show_progress=False)
    backend.train_from_iterator(documents, trainer=trainer)
    vocab = backend.get_vocab()
    if len(vocab) <= len(BERT_SPECIAL_LAYOUT):
        raise UserError("the corpus for train-tokenizer is empty: pass a text file with one document per line")
    return tokenizer_from_vocab(vocab, lowercase)


def vocab_lines(tok) -> list[str]:
    """Tokens in id order (the vocab.txt of a WordPiece tokenizer)."""
    by_id = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise UserError("tokenizer ids are not contiguous from 0: it cannot be written as a vocab.txt")
    return [t for t, _ in by_id]


def save_tokenizer(tok, output_dir: str) -> str:
    """save_pretrained plus a vocab.txt (ABB's and BERT's tools read that); returns the dir."""
    os.makedirs(output_dir, exist_ok=True)
    tok.save_pretrained(output_dir)
    if type(tok.backend_tokenizer.model).__name__ == "WordPiece":
        write_text_atomic(os.path.join(output_dir, "vocab.txt"), "".join(t + "\n" for t in vocab_lines(tok)))
    return output_dir
