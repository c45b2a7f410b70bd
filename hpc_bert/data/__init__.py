"""Data pipeline: corpus -> text shards -> masked-LM samples (HDF5, ABB layout) -> loader.

Command line: ``python -m hpc_bert.data {fetch,shard,samples,train-tokenizer,prepare}``.
Names below are imported lazily: the sample workers import this package, and should not
pay for torch or transformers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PretrainingDataLoader": "hpc_bert.data.loader",
    "Batch": "hpc_bert.data.loader",
    "check_dataset": "hpc_bert.data.dataset",
    "DatasetInfo": "hpc_bert.data.dataset",
    "load_tokenizer": "hpc_bert.data.tokenizer",
    "train_wordpiece": "hpc_bert.data.tokenizer",
    "save_tokenizer": "hpc_bert.data.tokenizer",
    "prepare": "hpc_bert.data.pipeline",
    "prepare_config": "hpc_bert.data.pipeline",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hpc_bert.data' has no attribute {name!r}")
