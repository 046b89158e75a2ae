"""Peak memory of one call, for the benchmark scripts' fresh-process memory children (Linux)."""
from __future__ import annotations

import contextlib
import ctypes
import gc
from typing import Any, Callable


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` field (VmRSS, VmHWM...) in MB."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) / 1024


def second_call_peak(call: Callable[[], Any]) -> dict[str, float]:
    """Call once (warm-up: allocator pools, lazy initialisation), then measure the second call's peak RSS
    against the RSS right before it: ``{"before_mb", "peak_mb"}``."""
    call()
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed setup memory back, so "before" is honest
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status_mb("VmRSS")
    call()
    return {"before_mb": before, "peak_mb": status_mb("VmHWM")}
