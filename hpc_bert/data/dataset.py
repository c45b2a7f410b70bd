"""Fast validation of a dataset folder before any training time is spent.

``check_dataset`` opens every shard once, reads its shapes and attributes and touches its
last row, then compares the whole set with what the model expects. Each problem ends in a
``UserError`` with one line naming the file and the fix.
"""
from __future__ import annotations

import dataclasses

from hpc_bert.data.hdf5io import ShardInfo, inspect_shard, list_shards
from hpc_bert.errors import UserError

SPECIAL_ID_ATTRS = ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    dataset_path: str
    train: tuple[ShardInfo, ...]
    test: tuple[ShardInfo, ...]
    max_seq_length: int
    max_predictions_per_seq: int
    tokenizer_vocab_size: int | None  # recorded by `prepare`; None for ABB files
    max_token_id: int | None
    special_ids: dict[str, int]  # recorded by `prepare` when all shards agree
    packing: str | None = None  # `prepare`'s --packing when all shards agree; None for ABB files

    @property
    def num_train_samples(self) -> int:
        return sum(s.num_samples for s in self.train)

    @property
    def num_test_samples(self) -> int:
        return sum(s.num_samples for s in self.test)


def _agreed_attr(shards: list[ShardInfo], key: str) -> int | None:
    values = {s.attrs.get(key) for s in shards}
    return int(values.pop()) if len(values) == 1 and None not in values else None


def _agreed_packing(shards: list[ShardInfo]) -> str | None:
    values = {s.attrs.get("packing") for s in shards}
    value = values.pop() if len(values) == 1 else None
    return value.decode() if isinstance(value, bytes) else value


def check_dataset(dataset_path: str, max_seq_length: int | None = None,
                  vocab_size: int | None = None) -> DatasetInfo:
    """Validate the HDF5 shards in ``dataset_path``; raises UserError for each bad input.

    ``max_seq_length``: the model's sequence length (must equal the shards').
    ``vocab_size``: the model's vocabulary size (every token id must be below it).
    """
    train_files, test_files = list_shards(dataset_path)
    if not train_files:
        raise UserError(f"no train shards in {dataset_path} (HDF5 files with 'train' in the name): "
                        f"run `python -m hpc_bert.data prepare --output_dir {dataset_path} ...` or point "
                        "--dataset_path at the folder that holds them")
    train = [inspect_shard(p, "train") for p in train_files]
    test = [inspect_shard(p, "test") for p in test_files]
    shards = train + test

    lengths = {s.max_seq_length for s in shards}
    if len(lengths) > 1:
        by_len = {s.max_seq_length: s.path for s in shards}
        listing = ", ".join(f"{p} has {n}" for n, p in sorted(by_len.items()))
        raise UserError(f"shards in {dataset_path} mix sequence lengths ({listing}): keep one "
                        "--max_seq_length per dataset folder")
    seq_len = lengths.pop()
    if max_seq_length is not None and max_seq_length != seq_len:
        raise UserError(f"--max_seq_length {max_seq_length} differs from the shards' {seq_len} in "
                        f"{dataset_path}: pass --max_seq_length {seq_len} or prepare the data with "
                        f"--max_seq_length {max_seq_length}")
    if sum(s.num_samples for s in train) == 0:
        raise UserError(f"the train shards in {dataset_path} hold no samples: prepare them from more text")

    if vocab_size is not None:
        for s in shards:
            if s.max_token_id is not None and s.max_token_id >= vocab_size:
                recorded = s.attrs.get("vocab_size")
                hint = f" (it was prepared with a {recorded}-token vocab)" if recorded else ""
                raise UserError(f"shard {s.path} holds token id {s.max_token_id}{hint} but the model's "
                                f"vocab has {vocab_size} ids: use the tokenizer the data was prepared "
                                f"with, or a --vocab_size above {s.max_token_id}")
    max_ids = [s.max_token_id for s in shards if s.max_token_id is not None]
    specials = {k: v for k in SPECIAL_ID_ATTRS if (v := _agreed_attr(shards, k)) is not None}
    return DatasetInfo(dataset_path=dataset_path, train=tuple(train), test=tuple(test),
                       max_seq_length=seq_len,
                       max_predictions_per_seq=max(s.max_predictions_per_seq for s in shards),
                       tokenizer_vocab_size=_agreed_attr(shards, "vocab_size"),
                       max_token_id=max(max_ids) if max_ids else None, special_ids=specials,
                       packing=_agreed_packing(shards))
