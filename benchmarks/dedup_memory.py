"""Redis memory per remembered event identity (two collectors, COLLECTOR_DEDUP_WINDOW_S): identities as the batch
script keeps them (HSETNX into one hash per bucket of event time, EXPIRE NX), at several event rates and bucket
widths, on a private redis-server. Prints bytes of used_memory per identity."""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import redis

from homeiq.local.services import RedisServer
from homeiq.shared.stream import DEFAULT_NAMES


def bytes_per_identity(client: redis.Redis, rate: int, width_s: int, seconds: int) -> float:
    client.flushall()
    base = int(client.info("memory")["used_memory"])
    count = rate * seconds
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        key = f"{DEFAULT_NAMES.collector_seen}{(1_733_000_000 + n // rate) // width_s}"
        pipe.hsetnx(key, hashlib.blake2b(n.to_bytes(8, "big"), digest_size=16).digest(), "")
        pipe.expire(key, 3600, nx=True)
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return (int(client.info("memory")["used_memory"]) - base) / count


def main(rates: list[int], widths: list[int], seconds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="homeiq-dedup-memory-") as tmp:
        server = RedisServer(Path(tmp), None).start()
        client = redis.Redis.from_url(server.url)
        try:
            print("events/s  bucket s  bytes/identity")
            for rate in rates:
                for width in widths:
                    print(f"{rate:>8}  {width:>8}  {bytes_per_identity(client, rate, width, seconds):>14.1f}")
        finally:
            client.close()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="20,100,1000")
    parser.add_argument("--widths", default="1,10", help="bucket widths, s (the collector's: 1)")
    parser.add_argument("--seconds", type=int, default=600, help="seconds of events at each rate")
    args = parser.parse_args()
    main([int(r) for r in args.rates.split(",")], [int(w) for w in args.widths.split(",")], args.seconds)
