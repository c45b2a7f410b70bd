"""Grid expansion: YAML -> numbered runs, stable across calls, one clear line for mistakes."""
from __future__ import annotations

import os

import pytest

from hpc_bert.errors import UserError
from hpc_bert.glue import grid as g
from hpc_bert.glue.cli import main as glue_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_configs_load():
    paper = g.load_grid(os.path.join(REPO, "configs", "glue", "paper.yaml"))
    assert len(paper.tasks) == 9 and paper.learning_rates == (5e-5, 8e-5, 1e-4) and len(paper.seeds) >= 3
    assert paper.exclude_from_average == ("WNLI",)
    assert paper.finetune_values("MRPC")["num_train_epochs"] == 5
    assert paper.finetune_values("MNLI")["num_train_epochs"] == 3
    demo = g.load_grid(os.path.join(REPO, "configs", "glue", "demo.yaml"))
    assert demo.tasks == ("SST-2",) and len(demo.learning_rates) == 1 and len(demo.seeds) == 2
    assert demo.finetune["max_train_samples"] <= 4000  # the demo's few minutes


def test_expansion_order_dirs_and_commands(tmp_path):
    grid = g.load_grid(write(tmp_path, "tasks: [rte, MRPC]\nlearning_rates: [5.0e-5, 1.0e-4]\nseeds: [1, 2, 3]\n"
                                       "num_train_epochs: 2\ndata_dir: /data/glue\n"
                                       "finetune: {evaluation_strategy: steps, eval_steps: 50}\n"
                                       "task_overrides: {RTE: {num_train_epochs: 10}}\n"))
    ckpts = g.resolve_checkpoints(grid, ["marker_0.5", "final"], "R")
    assert ckpts == [("marker_0.5", os.path.join("R", "finetune_checkpoints", "marker_0.5")),
                     ("final", os.path.join("R", "finetune_checkpoints", "final"))]
    runs = g.expand(grid, ckpts, "R")
    assert len(runs) == 2 * 2 * 2 * 3 and [r.index for r in runs] == list(range(24))
    first = runs[0]
    assert (first.checkpoint, first.task, first.learning_rate, first.seed) == ("marker_0.5", "RTE", 5e-5, 1)
    assert first.output_dir == os.path.join("R", "glue", "marker_0.5", "RTE", "lr5e-5_seed1")
    assert (runs[3].learning_rate, runs[3].seed) == (1e-4, 1)  # seeds vary fastest, then lr
    assert runs[6].task == "MRPC" and runs[12].checkpoint == "final"
    argv = " ".join(first.argv)
    assert "--num_train_epochs 10" in argv and "--data_dir /data/glue" in argv
    assert "--evaluation_strategy steps --eval_steps 50" in argv and "--learning_rate 5e-5" in argv
    assert "--num_train_epochs 2" in " ".join(runs[6].argv)
    assert first.command().startswith("python -m hpc_bert.finetune --model_name_or_path R/finetune_checkpoints/")
    # Same config, same names -> the same numbering (what a SLURM array relies on).
    assert [r.output_dir for r in g.expand(grid, ckpts, "R")] == [r.output_dir for r in runs]


def test_prompt_fine_tuning_in_a_grid_leaves_regression_to_a_head(tmp_path):
    text = "tasks: [SST-2, STS-B]\nlearning_rates: [1.0e-4]\nfinetune: {prompt: true}\n"
    with pytest.raises(UserError, match="STS-B is a regression task: drop --prompt"):
        g.load_grid(write(tmp_path, text))
    grid = g.load_grid(write(tmp_path, text + "task_overrides: {STS-B: {prompt: false}}\n"))
    sst2, stsb = (" ".join(r.argv) for r in g.expand(grid, [("final", "/ck/final")], "R"))
    assert "--prompt true" in sst2 and "--prompt false" in stsb
    from hpc_bert.config.flags import parse_config
    from hpc_bert.glue.finetune import FinetuneConfig
    cfg, _ = parse_config(FinetuneConfig, sst2.split(), prog="finetune")
    assert cfg.prompt and cfg.verbalizer == "terrible,great"  # the task's default label words


def test_several_batch_sizes_get_their_own_dirs(tmp_path):
    grid = g.load_grid(write(tmp_path, "tasks: [SST-2]\nlearning_rates: [1.0e-4]\nseeds: [1]\nbatch_sizes: [16, 32]\n"))
    runs = g.expand(grid, [("final", "/ck/final")], "R")
    assert [os.path.basename(r.output_dir) for r in runs] == ["lr1e-4_seed1_bs16", "lr1e-4_seed1_bs32"]
    assert "--per_device_train_batch_size 32" in runs[1].command()


def test_checkpoints_found_in_run_dir_sorted_by_budget(tmp_path):
    root = tmp_path / "finetune_checkpoints"
    for name in ("final", "marker_0.75", "marker_0.25", "marker_0.5", "half_written", "marker_0.9.tmp"):
        (root / name).mkdir(parents=True)
        if name != "half_written":  # a folder without config.json is not a checkpoint (yet), nor a .tmp one
            (root / name / "config.json").write_text("{}")
    grid = g.GridConfig(tasks=("SST-2",))
    names = [n for n, _ in g.resolve_checkpoints(grid, [], str(tmp_path))]
    assert names == ["marker_0.25", "marker_0.5", "marker_0.75", "final"]
    explicit = g.resolve_checkpoints(grid, [str(root / "final"), "marker_0.5"], str(tmp_path))
    assert explicit == [("final", str(root / "final")), ("marker_0.5", str(root / "marker_0.5"))]


def test_checkpoint_names_and_budget_fractions():
    assert g.checkpoint_names([0.5, 0.25], at_end=True) == ["marker_0.25", "marker_0.5", "final"]
    assert g.budget_fraction("marker_0.25") == 0.25 and g.budget_fraction("final") == 1.0
    assert g.budget_fraction("bert-base") is None
    assert sorted(["final", "bert-base", "marker_0.5"], key=g.checkpoint_sort_key) == ["marker_0.5", "final", "bert-base"]
    assert [g.format_lr(x) for x in (5e-5, 0.0001, 8e-05, 2.5e-5, 1e-3)] == ["5e-5", "1e-4", "8e-5", "2.5e-5", "1e-3"]


@pytest.mark.parametrize("text, message", [
    ("tasks: [SST-2]\nlerning_rates: [1.0e-4]\n", "unknown key 'lerning_rates'.*did you mean learning_rates"),
    ("tasks: [SQuAD]\n", "unknown GLUE task 'SQuAD'"),
    ("tasks: [SST-2]\nseeds: [1, 1]\n", "`seeds` lists a value twice"),
    ("tasks: [SST-2]\nseeds: []\n", "`seeds` is empty"),
    ("tasks: [SST-2]\nfinetune: {learning_rate: 1.0e-4}\n", "sets learning_rate, which the grid sets per run"),
    ("tasks: [SST-2]\nfinetune: {max_seq_lenght: 64}\n", "unknown finetune flag 'max_seq_lenght'.*max_seq_length"),
    ("tasks: [SST-2]\nfinetune: {evaluation_strategy: sometimes}\n", "'sometimes' is not valid"),
    ("tasks: [SST-2]\ntask_overrides: {QQQ: {eval_steps: 5}}\n", "unknown GLUE task 'QQQ'"),
    ("tasks: [SST-2]\nlearning_rates: [fast]\n", "bad value"),
])
def test_bad_grids_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as exc:
        g.load_grid(write(tmp_path, text))
    assert "\n" not in str(exc.value)


def test_no_checkpoints_is_explained(tmp_path):
    grid = g.GridConfig(tasks=("SST-2",))
    with pytest.raises(UserError, match="pass --run_dir RUN_DIR"):
        g.resolve_checkpoints(grid, [], None)
    with pytest.raises(UserError, match="finetune_checkpoints does not exist.*--checkpoints marker_0.5,final"):
        g.resolve_checkpoints(grid, [], str(tmp_path))
    with pytest.raises(UserError, match="two checkpoints are named 'final'"):
        g.resolve_checkpoints(grid, ["/a/final", "/b/final"], None)


def test_cli_expand_table_index_and_count(tmp_path, capsys):
    config = write(tmp_path, "tasks: [SST-2, CoLA]\nlearning_rates: [1.0e-4]\nseeds: [1, 2]\n")
    run_dir = str(tmp_path / "run")
    assert glue_main(["expand", config, "--run_dir", run_dir, "--checkpoints", "marker_0.5,final"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 8 runs (SLURM --array=0-7)") and "marker_0.5  CoLA" in out
    assert glue_main(["expand", config, "--run_dir", run_dir, "--checkpoints", "marker_0.5,final", "--count"]) == 0
    assert capsys.readouterr().out.strip() == "8"
    assert glue_main(["expand", config, "--run_dir", run_dir, "--checkpoints", "marker_0.5,final", "--index", "5"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--task_name SST-2" in line and "final" in line and "--seed 2" in line
    with pytest.raises(SystemExit):
        glue_main(["run", config, "--run_dir", run_dir, "--checkpoints", "final", "--index", "9"])
    err = capsys.readouterr().err
    assert "--index 9 is out of range: this grid has 4 runs" in err
    with pytest.raises(SystemExit):
        glue_main(["run", config, "--run_dir", run_dir, "--checkpoints", "marker_0.75", "--index", "0"])
    err = capsys.readouterr().err
    assert "pretraining has not saved 'marker_0.75'" in err and len(err.strip().splitlines()) == 1
    # Without --run_dir, explicit checkpoint folders write under runs/glue_<config name>.
    assert glue_main(["expand", config, "--checkpoints", str(tmp_path / "ck")]) == 0
    assert os.path.join("runs", "glue_grid", "glue", "ck", "SST-2") in capsys.readouterr().out


def test_start_from_makes_a_second_round_waiting_on_its_origin_runs(tmp_path):
    grid = g.load_grid(write(tmp_path, "tasks: [MNLI, SST-2, RTE, STS-B]\nseeds: [1, 2]\nlearning_rates: [1.0e-4]\n"
                                       "start_from: {rte: MNLI, STS-B: mnli}\n"))
    assert grid.start_from == {"RTE": "MNLI", "STS-B": "MNLI"}
    runs = g.expand(grid, [("marker_0.5", "/ck/marker_0.5"), ("final", "/ck/final")], str(tmp_path))
    first, second, origins = g.rounds(runs)
    assert [runs[i].task for i in first] == ["MNLI", "MNLI", "SST-2", "SST-2"] * 2
    assert [runs[i].task for i in second] == ["RTE", "RTE", "STS-B", "STS-B"] * 2
    assert [(runs[i].checkpoint, runs[i].task) for i in origins] == [("marker_0.5", "MNLI")] * 2 + [("final", "MNLI")] * 2
    mnli, sst, rte = runs[0], runs[2], runs[4]
    assert "--save_model" in mnli.argv and "--save_model" not in sst.argv  # only origins keep their model
    assert rte.start_from == "MNLI" and rte.argv[rte.argv.index("--ignore_mismatched_sizes") + 1] == "true"
    assert rte.argv_from("/m")[:2] == ["--model_name_or_path", "/m"] and rte.argv_from("/m")[2:] == rte.argv[2:]
    with pytest.raises(UserError, match="needs a finished MNLI run"):
        g.best_source_model(str(tmp_path), rte)


@pytest.mark.parametrize("text, message", [
    ("tasks: [MNLI, RTE]\nstart_from: {RTE: QQP}\n", "not in `tasks`"),
    ("tasks: [MNLI, RTE]\nstart_from: {RTE: RTE}\n", "first-round task"),
    ("tasks: [MNLI, RTE, MRPC]\nstart_from: {RTE: MNLI, MRPC: RTE}\n", "first-round task"),
    ("tasks: [MNLI, RTE]\nstart_from: [RTE, MNLI]\n", "mapping such as"),
])
def test_bad_start_from_is_one_clear_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        g.load_grid(write(tmp_path, text))


def test_best_source_model_is_the_highest_scoring_saved_run(tmp_path):
    import json
    grid = g.load_grid(write(tmp_path, "tasks: [MNLI, RTE]\nseeds: [1, 2, 3]\nlearning_rates: [1.0e-4]\n"
                                       "start_from: {RTE: MNLI}\n"))
    runs = g.expand(grid, [("final", "/ck/final")], str(tmp_path))
    for run, score in zip(runs[:3], (0.5, 0.9, 0.7)):
        os.makedirs(run.output_dir)
        with open(os.path.join(run.output_dir, "results.json"), "w") as fh:
            json.dump({"task": "MNLI", "score": score, "learning_rate": 1e-4, "seed": run.seed}, fh)
        open(os.path.join(run.output_dir, "config.json"), "w").write("{}")
    assert g.best_source_model(str(tmp_path), runs[3]) == runs[1].output_dir
