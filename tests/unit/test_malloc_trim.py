"""What a burst freed goes back to the system: glibc keeps freed heap memory below the last live block (RSS stays
at the burst's high-water mark, as the soak's collector did at each HA restart) until malloc_trim returns it."""

from __future__ import annotations

import subprocess
import sys

BURST = """
from homeiq.shared.runtime import _MALLOC_TRIM
def rss_mb(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss_mb()
burst = [bytearray(60_000) for _ in range(3000)]  # 180 MB of heap chunks, as a backfill's answers and batches
last = bytearray(60_000)  # still alive, above them: the heap's top cannot shrink past it
del burst
kept = rss_mb()
assert _MALLOC_TRIM is not None, "glibc's malloc_trim not found"
_MALLOC_TRIM(0)
print(before, kept, rss_mb())
"""


def test_a_bursts_freed_memory_stays_resident_until_malloc_trim_returns_it() -> None:
    done = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, check=True, timeout=60)
    before, kept, trimmed = map(float, done.stdout.split())
    assert kept - before > 150  # freed, yet still resident: what RSS showed after each burst
    assert trimmed - before < 20  # given back
