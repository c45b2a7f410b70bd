"""Counting host synchronisations and all-reduces, for tests and benchmarks.

A host sync is a point where the host waits for a device value: ``.item()`` / ``float()``
(``aten._local_scalar_dense``), ``.tolist()``, and ops whose output size depends on the data
(``nonzero``, ``masked_select``, a boolean index). On CPU nothing waits, but the same calls
stall a GPU's queue, so counting them on CPU tells what a GPU step will do.
All-reduces are counted at ``hpc_bert.pretrain.distributed.all_reduce`` (the loop's only
collective), whether or not a process group of several ranks exists.
"""
from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hpc_bert.pretrain import distributed

_SYNC_OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
             "aten.is_nonzero.default"}


class HostSyncCounter(TorchDispatchMode):
    """``with HostSyncCounter() as c: ...``; then ``c.syncs`` (a Counter by op) and ``c.all_reduces``.

    ``host_tensors``: tensors that live on the host on every device (e.g. torch AdamW's per-
    parameter ``step`` counters outside the fused path), whose reads never wait for a GPU.
    """

    def __init__(self, host_tensors=()):
        super().__init__()
        self.syncs: collections.Counter = collections.Counter()
        self.all_reduces = 0
        self._host = {t.data_ptr() for t in host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name == "aten._local_scalar_dense.default" and args[0].data_ptr() in self._host:
            pass  # a host counter: no device to wait for
        elif name in _SYNC_OPS or (name.startswith("aten.index.Tensor") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()))):
            self.syncs[name] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._tolist, self._all_reduce = torch.Tensor.tolist, distributed.all_reduce
        counter = self

        def tolist(t):
            counter.syncs["Tensor.tolist"] += 1
            return counter._tolist(t)

        def all_reduce(t, op):
            counter.all_reduces += 1
            return counter._all_reduce(t, op)

        torch.Tensor.tolist, distributed.all_reduce = tolist, all_reduce
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist, distributed.all_reduce = self._tolist, self._all_reduce
        return super().__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.syncs.values())
