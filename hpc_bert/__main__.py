"""``python -m hpc_bert COMMAND ...``: the same as the ``hpc-bert`` console script."""
import sys

from hpc_bert.cli import main

sys.exit(main())
