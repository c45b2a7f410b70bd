"""The demo's baseline row: a same-shape model that saw no pretraining, and the closing line that
reads the GLUE table (pretrained vs random init, beside the majority class)."""
import os

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from hpc_bert.config.pretrain import ModelConfig
from hpc_bert.demo import majority_class, what_pretraining_bought
from hpc_bert.glue.random_init import save_random_init
from hpc_bert.model.bert import build_hf_model
from pretrain_fixtures import write_vocab


def test_random_init_has_the_shape_and_tokenizer_but_not_the_weights(tmp_path):
    from hpc_bert.data.tokenizer import load_tokenizer
    write_vocab(str(tmp_path / "vocab.txt"))
    source = str(tmp_path / "final")
    model = build_hf_model(ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64, encoder_ln_mode="pre-ln"), 96)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "pretrained": far from any fresh initialisation
    model.save_pretrained(source)
    load_tokenizer(str(tmp_path / "vocab.txt")).save_pretrained(source)
    out = save_random_init(source, str(tmp_path / "random_init"), seed=3)
    fresh = AutoModelForMaskedLM.from_pretrained(out)
    assert fresh.config.to_dict() | {"_name_or_path": ""} == model.config.to_dict() | {"_name_or_path": ""}
    trained, untrained = dict(model.named_parameters()), dict(fresh.named_parameters())
    assert trained.keys() == untrained.keys()
    assert all(not torch.equal(trained[k], untrained[k]) for k in trained if "LayerNorm" not in k)
    assert AutoTokenizer.from_pretrained(out).vocab == AutoTokenizer.from_pretrained(source).vocab
    assert not os.path.exists(out + ".tmp")


def test_closing_line_reads_the_table_as_measured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("data/glue_data/SST-2")
    with open("data/glue_data/SST-2/dev.tsv", "w") as fh:
        fh.write("sentence\tlabel\n" + "a\t1\n" * 6 + "b\t0\n" * 4)
    assert majority_class("data/glue_data/SST-2/dev.tsv") == 0.6
    run = tmp_path / "run"
    run.mkdir()
    (run / "glue_results.csv").write_text("checkpoint,budget_fraction,SST-2,glue_avg\nmarker_0.5,0.5,55.0,55.0\n"
                                          "final,1,61.300,61.300\nrandom_init,,58.510,58.510\n")
    line = what_pretraining_bought(str(run))
    assert line.startswith("pretrained 61.3 vs random init 58.5 ") and "majority class scores 60.0" in line
