"""A bounded append-only spool on disk for events Redis could not take; it drains in order.

Segments `spool-<seq>.log` hold records `[4-byte big-endian length][payload]`. Each appended batch is
fsynced before `append` returns; a failed append is cut off again, so a later one never follows garbage.
A record is read only once it is committed, so the drainer never sees a torn write; after a crash a torn
tail record is skipped and counted. Drained segments are deleted; after a restart the remaining segments
are drained from their start again (duplicates are harmless: points are idempotent). The drainer reads a
`Chunk` of the oldest segment; while it publishes it, that segment is never the one dropped to make room, nor
are the first records while Redis may hold them already (see `SpoolKeeper`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Policy = Literal["drop_oldest", "drop_newest", "block"]
POLICIES: Final = ("drop_oldest", "drop_newest", "block")
_HEADER: Final = struct.Struct(">I")
SEGMENT_BYTES: Final = 64 * 1024 * 1024
SEGMENTS: Final = 8  # drop_oldest frees about 1/SEGMENTS of the spool at a time


@dataclass
class Segment:
    """One file: how much of it is committed, how much was drained, how many records it holds."""

    path: Path
    size: int = 0
    read_offset: int = 0
    records: int = 0
    drained: int = 0


@dataclass(frozen=True)
class Chunk:
    """Records read from the start of a segment's undrained part."""

    segment: Segment
    offset: int
    records: list[bytes]


def record_bytes(batch: list[bytes]) -> int:
    """What `batch` takes on disk."""
    return sum(_HEADER.size + len(p) for p in batch)


class Spool:
    """Append batches, read them back in order; never more than `max_bytes` on disk."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.segment_bytes = segment_bytes or max(1, min(SEGMENT_BYTES, max_bytes // SEGMENTS))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segments: list[Segment] = []
        self.torn_records = 0
        for path in sorted(self.directory.glob("spool-*.log"), key=lambda p: int(p.stem.split("-")[1])):
            self.segments.append(self._recover(path))

    def _recover(self, path: Path) -> Segment:
        """Count the complete records of a segment left by an earlier run; cut off a torn tail."""
        data = path.read_bytes()
        offset = records = 0
        while offset + _HEADER.size <= len(data):
            (length,) = _HEADER.unpack_from(data, offset)
            if offset + _HEADER.size + length > len(data):
                break
            offset += _HEADER.size + length
            records += 1
        if offset != len(data):
            self.torn_records += 1
            with path.open("r+b") as handle:
                handle.truncate(offset)
        return Segment(path, size=offset, records=records)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk not yet drained."""
        return sum(s.size - s.read_offset for s in self.segments)

    @property
    def records(self) -> int:
        """Records not yet drained."""
        return sum(s.records - s.drained for s in self.segments)

    def __bool__(self) -> bool:
        return self.records > 0

    def fits(self, batch: list[bytes]) -> bool:
        """Whether appending `batch` stays within `max_bytes`."""
        return self.size_bytes + record_bytes(batch) <= self.max_bytes

    def append(self, batch: list[bytes]) -> None:
        """Append and fsync one batch (blocking I/O: call it from a thread)."""
        if not self.segments or self.segments[-1].size >= self.segment_bytes:
            sequence = int(self.segments[-1].path.stem.split("-")[1]) + 1 if self.segments else 1
            self.segments.append(Segment(self.directory / f"spool-{sequence}.log"))
        segment = self.segments[-1]
        data = b"".join(_HEADER.pack(len(p)) + p for p in batch)
        try:
            with segment.path.open("ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            self._cut(segment)
            raise
        segment.size += len(data)
        segment.records += len(batch)

    @staticmethod
    def _cut(segment: Segment) -> None:
        """Truncate a segment back to what it committed (a disk that filled mid-write leaves part of a batch)."""
        try:
            with segment.path.open("r+b") as handle:
                handle.truncate(segment.size)
        except FileNotFoundError:
            pass

    def read(self, limit: int) -> Chunk | None:
        """Up to `limit` of the oldest undrained records, in order (blocking I/O); None when empty."""
        if not self.segments:
            return None
        segment = self.segments[0]
        with segment.path.open("rb") as handle:
            handle.seek(segment.read_offset)
            data = handle.read(min(segment.size - segment.read_offset, 8 * 1024 * 1024))
        out: list[bytes] = []
        offset = 0
        while len(out) < limit and offset + _HEADER.size <= len(data):
            (length,) = _HEADER.unpack_from(data, offset)
            if offset + _HEADER.size + length > len(data):
                if not out:  # a record larger than one read: read it whole
                    with segment.path.open("rb") as handle:
                        handle.seek(segment.read_offset + _HEADER.size)
                        out.append(handle.read(length))
                break
            out.append(data[offset + _HEADER.size: offset + _HEADER.size + length])
            offset += _HEADER.size + length
        return Chunk(segment, segment.read_offset, out) if out else None

    def undrained(self) -> Iterator[bytes]:
        """Every record not yet drained, oldest first, a segment in memory at a time (blocking I/O: iterate it in
        a thread, with the segments left alone meanwhile)."""
        for segment in list(self.segments):
            with segment.path.open("rb") as handle:
                handle.seek(segment.read_offset)
                data = handle.read(segment.size - segment.read_offset)
            offset = 0
            while offset + _HEADER.size <= len(data):
                (length,) = _HEADER.unpack_from(data, offset)
                yield data[offset + _HEADER.size: offset + _HEADER.size + length]
                offset += _HEADER.size + length

    def consumed(self, chunk: Chunk) -> None:
        """Mark a chunk `read` returned as published; delete what is fully drained."""
        segment = chunk.segment
        if not self.segments or segment is not self.segments[0] or segment.read_offset != chunk.offset:
            raise RuntimeError(f"spool chunk of {segment.path.name} at {chunk.offset} is no longer the oldest")
        segment.read_offset += sum(_HEADER.size + len(p) for p in chunk.records)
        segment.drained += len(chunk.records)
        if segment.read_offset >= segment.size and (len(self.segments) > 1 or segment.drained >= segment.records):
            self._delete(self.segments.pop(0))

    def drop_oldest(self, keep: Segment | None = None, keep_first: int = 0) -> int:
        """Delete the oldest segment other than `keep` (the one being drained) and those holding any of the first
        `keep_first` undrained records, to make room; returns how many undrained records it held (0: none could go)."""
        ahead = 0  # undrained records in the segments before
        for index, segment in enumerate(self.segments):
            undrained = segment.records - segment.drained
            if segment is not keep and not (undrained and ahead < keep_first):
                del self.segments[index]
                self._delete(segment)
                return undrained
            ahead += undrained
        return 0

    @staticmethod
    def _delete(segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)
