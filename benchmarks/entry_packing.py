"""What several events to a stream entry would save Redis (docs/design-entries-of-several-events.md, step 1).

A private redis-server as production runs it (AOF, `appendfsync everysec`; its rewrites' children counted) takes
the stream's whole round per event: the collector's publish script XADDs a burst of events (one entry each, or
packed `k` to an entry as a JSON array), a consumer group reads them with XREADGROUP and XACKs them, as the
writers do. Printed per packing: redis-server's CPU µs per event, and how many AOF rewrites it ran. Realistic
events (benchmarks/workload.py). Not a test: numbers on a shared machine vary; compare the rows of one run.

    python benchmarks/entry_packing.py --events 200000 --packings 1,8,64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads
from writer_bench import cpu_s

from homeiq.local.services import RedisServer

BURST: Final = 100  # events a publish call carries (the collector's burst at a few thousand a second)
READ: Final = 5000  # entries a read takes (WRITER_BATCH_SIZE)
# ARGV: k, then the payloads; one entry per event (k = 1) or a JSON array of k of them per entry.
PUBLISH: Final = """
local k = tonumber(ARGV[1])
local id = false
if k == 1 then
  for i = 2, #ARGV do id = redis.call('XADD', KEYS[1], '*', 'v', '1', 'e', ARGV[i]) end
else
  for first = 2, #ARGV, k do
    local last = math.min(first + k - 1, #ARGV)
    id = redis.call('XADD', KEYS[1], '*', 'v', '2', 'E', '[' .. table.concat(ARGV, ',', first, last) .. ']')
  end
end
return id
"""


async def one_packing(events: list[bytes], k: int, workdir: Path) -> dict[str, Any]:
    redis = RedisServer(workdir, None).start()
    try:
        client = aioredis.Redis.from_url(redis.url)
        publish = client.register_script(PUBLISH)
        await client.xgroup_create("s", "g", id="0", mkstream=True)
        assert redis.process is not None
        before = cpu_s(redis.process.pid)
        read = 0
        for start in range(0, len(events), READ):
            for first in range(start, min(start + READ, len(events)), BURST):
                await publish(keys=["s"], args=[k, *events[first:first + BURST]])
            while True:
                reply: Any = await client.xreadgroup("g", "c", {"s": ">"}, count=READ)
                if not reply:
                    break
                ids = [entry_id for entry_id, _ in reply[0][1]]
                read += len(ids)
                await client.xack("s", "g", *ids)
                await client.xtrim("s", minid=ids[-1])
        await asyncio.sleep(1.5)  # the last second's fsync
        used = cpu_s(redis.process.pid) - before
        info: Any = await client.info("persistence")
        await client.aclose()
        return {"events_per_entry": k, "entries": read, "redis_us_per_event": round(used / len(events) * 1e6, 2),
                "aof_rewrites": int(info.get("aof_rewrites", 0))}
    finally:
        redis.stop()


async def main_async(count: int, packings: list[int]) -> list[dict[str, Any]]:
    events = payloads(count)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in packings:
            rows.append(await one_packing(events, k, Path(tmp) / f"k{k}"))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--packings", default="1,8,64", help="events per entry, comma-separated")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args.events, [int(k) for k in args.packings.split(",")]))
    base = rows[0]["redis_us_per_event"]
    for row in rows:
        us = row["redis_us_per_event"]
        print(f"{row['events_per_entry']:>3} events an entry: redis-server {us:6.2f} µs an event "
              f"({us / base:.2f} of {rows[0]['events_per_entry']}), "
              f"{row['aof_rewrites']} AOF rewrites")
    return 0


if __name__ == "__main__":
    sys.exit(main())
