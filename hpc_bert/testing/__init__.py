"""Test support, not product code: synthetic corpora and shards, and a host-sync counter, for
the tests and benchmarks. Nothing in the product imports this folder (a test checks it)."""
