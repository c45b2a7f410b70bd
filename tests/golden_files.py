"""Golden files of generated job scripts (tests/golden/): the machine's paths normalized;
HPC_BERT_UPDATE_GOLDEN=1 rewrites a file after a deliberate change (review its diff)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(module: str, args: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kw)


def golden_path(name: str) -> str:
    return os.path.join(REPO, "tests", "golden", name)


def normalized(text: str) -> str:
    return text.replace(sys.executable, "{PYTHON}").replace(REPO, "{REPO}")


def matches_golden(output: str, name: str) -> str:
    """``output`` normalized, asserted equal to the golden file ``name``; returned for more checks."""
    got = normalized(output)
    if os.environ.get("HPC_BERT_UPDATE_GOLDEN"):
        with open(golden_path(name), "w") as fh:
            fh.write(got)
    with open(golden_path(name)) as fh:
        assert got == fh.read()
    return got
