import os

# DeepSpeed JIT-compiles a CPU communication op once; keep it in one stable place so every
# test process (and every SLURM job they submit) reuses the build.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/hpc_bert/torch_extensions"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from slurm_fixture import slurm_cluster  # noqa: E402,F401  (session fixture: a real SLURM)

import pytest  # noqa: E402

from pretrain_fixtures import vocab_and_shards  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny vocab and 2 train + 1 test shards of 40 samples, once per test module."""
    return vocab_and_shards(tmp_path_factory.mktemp("inputs"), per_shard=40)
