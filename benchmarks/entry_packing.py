"""What several events to a stream entry would save Redis (docs/design-entries-of-several-events.md, step 1).

A private redis-server as production runs it (AOF, `appendfsync everysec`; its rewrites' children counted) takes
the stream's whole round per event: the collector's publish script XADDs a burst of events (one entry each, or
packed `k` to an entry as a JSON array), a consumer group reads them with XREADGROUP and XACKs them, as the
writers do. A packing `kz` (`1z`, `64z`) is the same with each entry's payload compressed by the publisher (raw
deflate, isal level 1, as the writers compress their requests), the array of `k` events or the one event: the
script then adds it as it is. Printed per packing: redis-server's CPU µs per event, how many AOF rewrites it ran,
the bytes an event takes in the stream, and the publisher's and the reader's own CPU µs per event for the
compression (and decompression) it adds, measured in this process. Realistic events (benchmarks/workload.py). Not
a test: numbers on a shared machine vary; compare the rows of one run.

    python benchmarks/entry_packing.py --events 200000 --packings 1,8,64,1z,64z
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis
from isal import isal_zlib

sys.path.insert(0, str(Path(__file__).parent))
from workload import payloads
from writer_bench import cpu_s

from homeiq.local.services import RedisServer

BURST: Final = 100  # events a publish call carries (the collector's burst at a few thousand a second)
READ: Final = 5000  # entries a read takes (WRITER_BATCH_SIZE)
# ARGV: k, then the payloads; one entry per event (k = 1) or a JSON array of k of them per entry; k = 0: each
# payload is an entry's compressed payload already.
PUBLISH: Final = """
local k = tonumber(ARGV[1])
local id = false
if k == 0 then
  for i = 2, #ARGV do id = redis.call('XADD', KEYS[1], '*', 'v', '3', 'z', ARGV[i]) end
elseif k == 1 then
  for i = 2, #ARGV do id = redis.call('XADD', KEYS[1], '*', 'v', '1', 'e', ARGV[i]) end
else
  for first = 2, #ARGV, k do
    local last = math.min(first + k - 1, #ARGV)
    id = redis.call('XADD', KEYS[1], '*', 'v', '2', 'E', '[' .. table.concat(ARGV, ',', first, last) .. ']')
  end
end
return id
"""


def compressed(burst: list[bytes], k: int) -> list[bytes]:
    """The burst's entries, `k` events to one, each entry's payload compressed as a writer compresses a request."""
    return [isal_zlib.compress(b"[" + b",".join(burst[first:first + k]) + b"]" if k > 1 else burst[first],
                               1, -15)
            for first in range(0, len(burst), k)]


async def one_packing(events: list[bytes], packing: str, workdir: Path) -> dict[str, Any]:
    k, compress = int(packing.rstrip("z")), packing.endswith("z")
    redis = RedisServer(workdir, None).start()
    try:
        client = aioredis.Redis.from_url(redis.url)
        publish = client.register_script(PUBLISH)
        await client.xgroup_create("s", "g", id="0", mkstream=True)
        assert redis.process is not None
        before = cpu_s(redis.process.pid)
        read = stored = 0
        codec_s = 0.0
        for start in range(0, len(events), READ):
            for first in range(start, min(start + READ, len(events)), BURST):
                burst = events[first:first + BURST]
                if compress:
                    began = time.process_time()
                    burst = compressed(burst, k)
                    codec_s += time.process_time() - began
                stored += sum(map(len, burst))
                await publish(keys=["s"], args=[0 if compress else k, *burst])
            while True:
                reply: Any = await client.xreadgroup("g", "c", {"s": ">"}, count=READ)
                if not reply:
                    break
                entries = reply[0][1]
                if compress:
                    began = time.process_time()
                    for _, entry in entries:
                        isal_zlib.decompress(entry[b"z"], -15)
                    codec_s += time.process_time() - began
                ids = [entry_id for entry_id, _ in entries]
                read += len(ids)
                await client.xack("s", "g", *ids)
                await client.xtrim("s", minid=ids[-1])
        await asyncio.sleep(1.5)  # the last second's fsync
        used = cpu_s(redis.process.pid) - before
        info: Any = await client.info("persistence")
        await client.aclose()
        return {"packing": packing, "events_per_entry": k, "compressed": compress, "entries": read,
                "bytes_per_event": round(stored / len(events)),
                "redis_us_per_event": round(used / len(events) * 1e6, 2),
                "codec_us_per_event": round(codec_s / len(events) * 1e6, 2),
                "aof_rewrites": int(info.get("aof_rewrites", 0))}
    finally:
        redis.stop()


async def main_async(count: int, packings: list[str]) -> list[dict[str, Any]]:
    events = payloads(count)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for packing in packings:
            rows.append(await one_packing(events, packing, Path(tmp) / f"k{packing}"))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--packings", default="1,8,64",
                        help="events per entry, comma-separated; a trailing z: each entry compressed")
    args = parser.parse_args()
    packings = args.packings.split(",")
    if not all(re.fullmatch(r"[1-9][0-9]*z?", packing) for packing in packings):
        parser.error(f"--packings: a comma-separated list of counts, each maybe with a z: not {args.packings!r}")
    rows = asyncio.run(main_async(args.events, packings))
    base = rows[0]
    for row in rows:
        us, ours = row["redis_us_per_event"], row["redis_us_per_event"] + row["codec_us_per_event"]
        print(f"{row['packing']:>4}: {row['bytes_per_event']:>4} bytes an event, redis-server {us:6.2f} µs an event "
              f"({share(us, base['redis_us_per_event'])} of {base['packing']}), codec "
              f"{row['codec_us_per_event']:5.2f}, together {share(ours, base['redis_us_per_event'])}; "
              f"{row['aof_rewrites']} AOF rewrites")
    return 0


def share(value: float, of: float) -> str:
    """`value` as a share of `of`; n/a when `of` is 0 (a run too small for /proc's clock ticks: CI's tiny one)."""
    return f"{value / of:.2f}" if of else "n/a"


if __name__ == "__main__":
    sys.exit(main())
