"""Test aids shipped with the package: fault-injection hooks the trainer calls (inert unless
HPC_BERT_FAULTS is set) and synthetic corpora / shards."""
