"""Throughput as status shows it: tokens seen and mean real tokens/s per allocation, and the
plot's throughput panel, all read from the train events of RUN_DIR/metrics.jsonl."""
from __future__ import annotations


def _per_allocation(events: list[dict]) -> list[list[dict]]:
    """The events of each allocation, split at allocation_start (the first allocation's may lack one)."""
    groups: list[list[dict]] = []
    for e in events:
        if e["event"] == "allocation_start" or not groups:
            groups.append([])
        groups[-1].append(e)
    return groups


def allocation_throughput(events: list[dict], ledger=None) -> list[dict]:
    """Per allocation: tokens trained (tokens), tokens seen at its end, and mean real tokens/s — its
    tokens over the ledger's wall seconds of training for it; without a ledger, the tokens between
    print steps over the wall time they took (each train event's tokens / its rate)."""
    out = []
    for group in _per_allocation(events):
        start_event = next((e for e in group if e["event"] == "allocation_start"), {})
        start = start_event.get("tokens_seen") or 0
        seen, tokens, seconds = start, 0, 0.0
        for e in group:
            if e["event"] == "train" and e.get("tokens_seen") is not None and e.get("tokens_per_s"):
                delta = e["tokens_seen"] - seen
                tokens, seconds = tokens + delta, seconds + delta / e["tokens_per_s"]
            if e["event"] in ("train", "allocation_end") and e.get("tokens_seen") is not None:
                seen = e["tokens_seen"]
        index = start_event.get("allocation")  # 1-based in the ledger (rank 0's events carry it)
        if ledger is not None and index and index <= len(ledger.allocations):
            tokens, seconds = seen - start, ledger.allocations[index - 1].train_s
        out.append({"tokens": seen - start, "tokens_seen": seen,
                    "tokens_per_s": tokens / seconds if seconds > 0 else None})
    return out


def _si(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def throughput_lines(events: list[dict], ledger=None) -> list[str]:
    """status's throughput lines: tokens seen, then one line per allocation (none without train events)."""
    train = [e for e in events if e["event"] == "train"]
    if not train or train[-1].get("tokens_seen") is None:
        return []  # nothing trained yet, or a run from before throughput was logged
    per = allocation_throughput(events, ledger)
    mfus = [e["mfu"] for e in train if e.get("mfu") is not None]
    lines = [f"tokens seen: {per[-1]['tokens_seen']} ({_si(per[-1]['tokens_seen'])}); last "
             f"{train[-1].get('samples_per_s', 0):.1f} samples/s, {_si(train[-1].get('tokens_per_s') or 0)} tokens/s"
             + (f", MFU {mfus[-1]:.1%}" if mfus else "")]
    for i, a in enumerate(per):
        rate = f" at a mean {_si(a['tokens_per_s'])} tokens/s" if a["tokens_per_s"] else ""
        lines.append(f"  allocation {i}: {_si(a['tokens'])} tokens{rate}")
    return lines


def throughput_panel(ax, train: list[dict]) -> None:
    """Real tokens/s against budget hours; MFU on a second axis when the events carry it."""
    hours = [e["elapsed_s"] / 3600 for e in train]
    ax.plot(hours, [e.get("tokens_per_s") or 0 for e in train], color="tab:green")
    ax.set_ylabel("real tokens/s")
    if any(e.get("mfu") is not None for e in train):
        twin = ax.twinx()
        twin.plot(hours, [100 * e["mfu"] if e.get("mfu") is not None else float("nan") for e in train],
                  color="tab:purple", linewidth=0.8)
        twin.set_ylabel("MFU %")
