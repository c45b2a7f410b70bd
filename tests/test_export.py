"""python -m hpc_bert.export: a real tiny run (stopped once and resumed) exported to a folder that
transformers loads offline, with a model card that holds the ledger's figures."""
import os
import subprocess
import sys

import pytest

from hpc_bert.launch.export import main as export_main
from hpc_bert.layout import GLUE_TABLE_MD, read_events
from hpc_bert.pretrain.clock import Ledger
from pretrain_fixtures import REPO, simulated_flags, train

pytestmark = pytest.mark.slow
STEP_S = 10.0
HOURS = 10 * STEP_S / 3600
GLUE_TABLE = "| checkpoint | SST-2 |\n|---|---|\n| final | 61.0 |"


@pytest.fixture(scope="module")
def run(tmp_path_factory, inputs):
    run = tmp_path_factory.mktemp("export") / "run"
    flags = simulated_flags(run, inputs, HOURS, STEP_S, finetune_checkpoint_at_end="true",
                            finetune_time_markers="0.5")
    first = train(flags, env_extra={"HPC_BERT_FAULTS": "usr2@step:4"})
    assert first.returncode == 75, first.stderr[-3000:]
    second = train(flags)
    assert second.returncode == 0, second.stderr[-3000:]
    with open(os.path.join(run, GLUE_TABLE_MD), "w") as fh:  # what glue aggregate writes beside the run
        fh.write(GLUE_TABLE + "\n")
    return run


def test_export_loads_offline_and_its_card_holds_the_ledger(run, tmp_path):
    out = tmp_path / "exported"
    assert export_main([str(run), "--output", str(out)]) == 0
    load = ("from transformers import AutoModelForMaskedLM, AutoTokenizer; import sys; "
            "m = AutoModelForMaskedLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1]); "
            "ids = t('w1 w2 [MASK] w4', return_tensors='pt'); print(type(m).__name__, m(**ids).logits.shape[-1])")
    r = subprocess.run([sys.executable, "-c", load, str(out)], capture_output=True, text=True, cwd=REPO, timeout=120,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ForMaskedLM" in r.stdout
    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: apache-2.0" in header and "language: en" in header and "tags:" in header
    ledger = Ledger.load(str(run))
    totals = ledger.totals()
    # started by hand, not by a scheduler: the second allocation counts as a resubmission
    assert totals["allocations"] == 2 and (totals["requeues"], totals["resubmissions"]) == (0, 1)
    assert "in 2 allocations (0 requeues by the scheduler, 1 resubmission)" in card
    assert f"Budget {ledger.budget_s / 3600:g} h" in card and f"lost {totals['lost_s']:.1f}" in card
    events = read_events(str(run))
    tokens = max(e["tokens_seen"] for e in events if e.get("tokens_seen") is not None)
    assert f"tokens seen: {tokens} " in card and tokens > 0
    val = [e for e in events if e["event"] == "validation"][-1]
    assert f"final validation loss (MLM): {val['val_loss']:.4f}" in card
    assert GLUE_TABLE in card and "| `lr` | 0.003 |" in card
    assert "cpu" in card  # the hardware the allocations recorded


def test_a_missing_checkpoint_is_one_line_listing_those_that_exist(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_main([str(run), "--checkpoint", "marker_0.9", "--output", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "marker_0.9" in err and "final, marker_0.5" in err
    assert not (tmp_path / "x").exists()
