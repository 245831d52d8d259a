"""Pieces the op benchmarks (``bench_<op>.py``) share [pymtl].

* ``DEVICES``, ``short(P)`` for ids and group names, ``rounds(nbytes)``;
* ``InputCache``: one shape's inputs at a time (the large ones take GBs);
* ``run_timed``: times one implementation with ``benchmark.pedantic`` (synchronising CUDA in
  the timed body) and records ``GBps``, the bytes read over the min time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def short(n: int) -> str:
    """``n`` in the short exponent form of ids and groups: 1000000 -> ``"1e6"``."""
    return f"{n:.0e}".replace("e+0", "e")


def rounds(nbytes: int) -> int:
    """About 2 GB read per benchmark, 5 to 50 rounds."""
    return max(5, min(50, int(2e9 // max(nbytes, 1))))


class InputCache:
    """The inputs of one key (device, shape) at a time: a new key drops the old inputs."""

    def __init__(self) -> None:
        self._key: Hashable = None
        self._entry: dict[str, Tensor] = {}

    def get(
        self, key: Hashable, device: str, make: Callable[[], dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The entry of ``key``, made by ``make()`` on a miss (after freeing the previous one)."""
        if not self._entry or key != self._key:
            self.clear()
            if device == "cuda":
                torch.cuda.empty_cache()
            self._entry, self._key = make(), key
        return self._entry

    def clear(self) -> None:
        self._entry, self._key = {}, None

    def fixture(self) -> Callable[[], Iterator[None]]:
        """A module-scoped autouse fixture that frees the inputs when the module is done."""

        def _free_inputs() -> Iterator[None]:
            yield
            self.clear()

        return pytest.fixture(autouse=True, scope="module")(_free_inputs)


def run_timed(
    benchmark: Any, fn: Callable[[], Tensor], device: str, nbytes: int, n_rounds: int | None = None
) -> Tensor:
    """``fn()`` timed by ``benchmark.pedantic`` (one warm-up round); sets ``GBps`` when timed."""

    def timed() -> Tensor:
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    n = rounds(nbytes) if n_rounds is None else n_rounds
    out: Tensor = benchmark.pedantic(timed, rounds=n, warmup_rounds=1, iterations=1)
    if not benchmark.disabled:
        benchmark.extra_info["GBps"] = round(nbytes / benchmark.stats.stats.min / 1e9, 2)
    return out


def _rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process, in KiB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_bytes(fn: Callable[[], object], device: str) -> int:
    """Bytes of memory ``fn()`` needs at its peak beyond what was in use before it ran.

    * cuda: ``torch.cuda.max_memory_allocated`` over the call, less the allocation before it
      (the caching allocator's view: every tensor, including the kernels' workspaces, which
      come from torch).
    * cpu: the process's resident-set high-water mark. glibc first returns its free heap to
      the system (``malloc_trim``), the kernel's ``VmHWM`` is reset to the current RSS
      (``clear_refs`` 5), and the result is ``VmHWM − VmRSS`` after the call. This counts every
      page touched by torch tensors and by the C++ kernels' own scratch alike (torch's CPU
      allocator statistics would miss the latter). Linux only; 0 where it is unavailable.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    try:
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        base = _rss_kib("VmRSS")
    except OSError:
        fn()
        return 0
    fn()
    return max(0, _rss_kib("VmHWM") - base) * 1024
