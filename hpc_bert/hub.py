"""Whether the Hugging Face hub can be reached, asked once before any hub download.

Offline, transformers and datasets retry for tens of seconds and print a traceback or a page of
retry lines; every hub route here (tokenizer names, GLUE from the hub, --dataset_name) asks this
first and fails with one line instead.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def unreachable_reason(timeout_s: float = 5.0) -> str | None:
    """None when the hub answers a TCP connect; else why not, for an error line."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return None
    except OSError:
        return f"the Hugging Face hub ({parsed.hostname}) is not reachable"
