"""Wall time and peak memory of one call, shared by `make perf`'s predict (perf.py) and
train (perf_train.py) figures."""

from __future__ import annotations

import threading
import time
from pathlib import Path


class PeakRSS:
    """Peak resident memory (MiB) while the block runs, sampled from /proc (CPU), or peak
    allocated CUDA memory on GPU."""

    def __enter__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.peak, self.stop = _rss_mb(), False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.02)

    def __exit__(self, *exc):
        import torch

        self.stop = True
        self.thread.join()
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() / 2**20


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def timed(fn):
    with PeakRSS() as mem:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, round(mem.peak, 1)
