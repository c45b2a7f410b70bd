"""Config: the seed command parses, YAML < CLI layering, one clear line per bad value."""
import re
import subprocess
import sys

import pytest
import yaml

from hpc_bert.config.flags import parse_config, to_yaml
from hpc_bert.config.pretrain import PretrainConfig
from hpc_bert.errors import ConfigError, UserError

SEED_COMMAND = """--model_type bert-mlm --tokenizer_name bert-large-uncased --hidden_act gelu --hidden_size 1024
--num_hidden_layers 24 --num_attention_heads 16 --intermediate_size 4096 --hidden_dropout_prob 0.1
--attention_probs_dropout_prob 0.1 --encoder_ln_mode pre-ln --lr 1e-3 --train_batch_size 4096
--train_micro_batch_size_per_gpu 32 --lr_schedule time --curve linear --warmup_proportion 0.06
--gradient_clipping 0.0 --optimizer_type adamw --weight_decay 0.01 --adam_beta1 0.9 --adam_beta2 0.98
--adam_eps 1e-6 --total_training_time 24.0 --early_exit_time_marker 24.0 --dataset_path DIR
--output_dir OUT --print_steps 100 --num_epochs_between_checkpoints 10000 --job_name pretraining_experiment
--project_name budget-bert-pretraining --validation_epochs 3 --validation_epochs_begin 1
--validation_epochs_end 1 --validation_begin_proportion 0.05 --validation_end_proportion 0.01
--validation_micro_batch 16 --deepspeed --data_loader_type dist --do_validation --use_early_stopping
--early_stop_time 180 --early_stop_eval_loss 6 --seed 42 --fp16""".split()

EXTRA = "--fp16_backend ds --fp16_opt O2 --finetune_time_markers 0.25,0.5,0.75 --finetune_checkpoint_at_end " \
        "--clock simulated --simulated_step_seconds 2.5".split()


def parse(argv):
    cfg, _ = parse_config(PretrainConfig, argv, prog="test")
    return cfg


def test_whole_seed_command_parses():
    cfg = parse(SEED_COMMAND + EXTRA)
    assert cfg.model.hidden_size == 1024 and cfg.model.encoder_ln_mode == "pre-ln"
    assert cfg.optim.lr == 1e-3 and cfg.optim.train_batch_size == 4096
    assert cfg.schedule.total_training_time == 24.0 and cfg.schedule.budget_s == 24 * 3600
    assert cfg.validation.do_validation and cfg.validation.use_early_stopping
    assert cfg.validation.early_stop_eval_loss == 6.0
    assert cfg.runtime.fp16 and cfg.runtime.deepspeed
    assert cfg.schedule.finetune_time_markers == (0.25, 0.5, 0.75)
    assert cfg.schedule.clock == "simulated" and cfg.schedule.simulated_step_seconds == 2.5
    assert cfg.data.dataset_path == "DIR" and cfg.checkpoint.output_dir == "OUT"


def test_bf16_flag_and_boolean_forms():
    assert parse(["--bf16"]).runtime.bf16
    assert parse(["--do_validation", "false"]).validation.do_validation is False
    assert parse(["--no_sparse_mask_prediction"]).model.sparse_mask_prediction is False


def test_yaml_then_cli_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"optim": {"lr": 5e-4}, "total_training_time": 2.0, "seed": 7}))
    cfg = parse(["--config", str(f), "--seed", "9"])
    assert cfg.optim.lr == 5e-4 and cfg.schedule.total_training_time == 2.0 and cfg.runtime.seed == 9


def test_print_config_round_trips(tmp_path):
    cfg = parse(SEED_COMMAND)
    f = tmp_path / "printed.yaml"
    f.write_text(to_yaml(cfg))
    assert parse(["--config", str(f)]) == cfg


def test_shipped_configs_parse():
    for name in ("academic-bert-large", "tiny"):
        cfg = parse(["--config", f"configs/pretrain/{name}.yaml"])
        assert cfg.schedule.total_training_time > 0
    big = parse(["--config", "configs/pretrain/academic-bert-large.yaml"])
    assert (big.model.hidden_size, big.model.num_hidden_layers, big.optim.train_batch_size) == (1024, 24, 4096)


def test_print_config_cli_exits_zero_and_touches_nothing(tmp_path):
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, "-m", "hpc_bert.train", *SEED_COMMAND[:-1], "--output_dir", str(out),
                        "--dataset_path", str(tmp_path / "missing"), "--print_config"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["optim"]["lr"] == 1e-3
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--total_training_time", "0"], "--total_training_time must be a positive"),
    (["--total_training_time", "-3"], "--total_training_time must be a positive"),
    (["--warmup_proportion", "1.0"], "--warmup_proportion must lie in [0, 1)"),
    (["--warmup_proportion", "-0.1"], "--warmup_proportion must lie in [0, 1)"),
    (["--finetune_time_markers", "0.5,1.5"], "outside (0, 1]"),
    (["--finetune_time_markers", "0"], "outside (0, 1]"),
    (["--curve", "sawtooth"], "--curve 'sawtooth' is not valid: choose one of linear, exp, cosine, constant"),
    (["--lr", "fast"], "--lr expects float"),
    (["--train_batch_size", "100", "--train_micro_batch_size_per_gpu", "32"], "not a multiple"),
    (["--lr_schedule", "step"], "needs --max_steps"),
    (["--fp16", "--bf16"], "choose one precision"),
])
def test_bad_values_give_one_clear_line(argv, needle):
    with pytest.raises(ConfigError) as e:
        parse(argv)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_flag_names_closest():
    with pytest.raises(ConfigError, match=r"unknown flag --warmup_proportio: did you mean --warmup_proportion"):
        parse(["--warmup_proportio", "0.1"])
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        from hpc_bert.config.flags import flatten_yaml
        flatten_yaml(PretrainConfig, {"lrr": 1}, "x.yaml")


def test_unknown_flag_cli_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hpc_bert.train", "--totl_training_time", "3"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean --total_training_time" in lines[0]


def test_missing_config_file():
    with pytest.raises(UserError, match="does not exist"):
        parse(["--config", "/nonexistent.yaml"])


def test_early_exit_beyond_budget_is_allowed_but_reported():
    cfg = parse(["--total_training_time", "2", "--early_exit_time_marker", "3"])
    notes = cfg.notes()
    assert any("beyond --total_training_time" in n for n in notes)
    assert cfg.schedule.stop_s == 2 * 3600
    assert parse(["--total_training_time", "2", "--early_exit_time_marker", "1"]).schedule.stop_s == 3600


CONFIGS_WITH_CHOICES = {  # every config class with `choices` fields, and the flags it needs to build
    "pretrain": (PretrainConfig, ["--max_steps", "10"]),  # --lr_schedule step needs it
    "submit": ("hpc_bert.launch.submit:SubmitConfig", ["--budget", "1"]),
    "finetune": ("hpc_bert.glue.finetune:FinetuneConfig",
                 ["--model_name_or_path", "m", "--task_name", "SST-2", "--output_dir", "o", "--do_train"]),
}


def _choice_fields(cls):
    import importlib

    from hpc_bert.config.flags import leaf_fields
    if isinstance(cls, str):
        module, name = cls.split(":")
        cls = getattr(importlib.import_module(module), name)
    return cls, {n: f.metadata["choices"] for n, (_s, f, _t) in leaf_fields(cls).items() if f.metadata.get("choices")}


@pytest.mark.parametrize("name", sorted(CONFIGS_WITH_CHOICES))
def test_choices_checked_from_field_metadata(name):
    """Each field's `choices` is the only list of its valid values: every other value fails with one
    message naming them all, every listed one (ints such as --zero_stage too) is accepted."""
    cls, base = CONFIGS_WITH_CHOICES[name]
    cls, fields = _choice_fields(cls)
    assert fields, f"{name}: no field has choices"
    for flag, choices in fields.items():
        with pytest.raises(ConfigError) as e:
            parse_config(cls, [*base, f"--{flag}", "not-a-choice"], prog="test")
        # (an alias such as --evaluation_strategy is reported under the name it resolves to)
        expected = rf"--\w+ 'not-a-choice' is not valid: choose one of {re.escape(', '.join(map(str, choices)))}"
        assert re.fullmatch(expected, str(e.value)) or f"--{flag} expects int" in str(e.value), str(e.value)
        for choice in choices:
            cfg, _ = parse_config(cls, [*base, f"--{flag}", str(choice)], prog="test")


def test_zero_stage_choices_are_ints():
    with pytest.raises(ConfigError, match=r"--zero_stage 4 is not valid: choose one of 0, 1, 2, 3"):
        parse(["--zero_stage", "4"])
    assert parse(["--zero_stage", "3"]).runtime.zero_stage == 3


def test_choices_checked_when_a_section_is_built_directly():
    from hpc_bert.config.pretrain import ModelConfig
    with pytest.raises(ConfigError, match="--hidden_act 'tanh' is not valid: choose one of gelu, relu, gelu_new, silu"):
        ModelConfig(hidden_act="tanh")
