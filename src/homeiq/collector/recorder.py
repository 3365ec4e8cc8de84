"""HA's recorder as the backfill reads it: on a connection of its own, in pieces that fit in one message, and only
once the recorder has committed the gap.

The recorder commits its session every `commit_interval` (5 s by default, often 30 s on SD cards), and history
shows only what it committed. It commits in the order HA fired the changes, so once a state that arrived live after
our subscription is in the history, every state of the gap (all fired before it) is too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Final, Self

from homeiq.shared.ha import frames
from homeiq.shared.ha.client import CommandFailed, HAConnection, MessageTooBig
from homeiq.shared.ha.history import HistoryRow, decode_history, history_command
from homeiq.shared.times import float_ns

MIN_SPAN_NS: Final = 1_000_000  # a piece of one entity and one millisecond is not split further
MAX_PROBES: Final = 64  # live states (of distinct entities) whose presence in history proves the recorder's progress

History = dict[str, list[HistoryRow]]
Key = tuple[str, int]  # entity id, state time (ns) as a live event shows it


class Piece:
    """What one `history/history_during_period` asks for: entities, from `start_ns`, before `end_ns` (None: now)."""

    __slots__ = ("end_ns", "entity_ids", "start_ns")

    def __init__(self, entity_ids: list[str], start_ns: int, end_ns: int | None) -> None:
        self.entity_ids, self.start_ns, self.end_ns = entity_ids, start_ns, end_ns

    def halves(self, now_ns: int) -> list[Piece] | None:
        """Two pieces covering this one (by entities while there are several, else by time); None when too small."""
        if len(self.entity_ids) > 1:
            middle = len(self.entity_ids) // 2
            return [Piece(self.entity_ids[:middle], self.start_ns, self.end_ns),
                    Piece(self.entity_ids[middle:], self.start_ns, self.end_ns)]
        end_ns = self.end_ns if self.end_ns is not None else max(now_ns, self.start_ns + 2 * MIN_SPAN_NS)
        if end_ns - self.start_ns < 2 * MIN_SPAN_NS:
            return None
        middle_ns = (self.start_ns + end_ns) // 2 // 1000 * 1000
        return [Piece(self.entity_ids, self.start_ns, middle_ns), Piece(self.entity_ids, middle_ns, self.end_ns)]

    def holds(self, time_ns: int) -> bool:
        """Whether a state at `time_ns` belongs to this piece (each state to exactly one of two halves)."""
        return time_ns >= self.start_ns and (self.end_ns is None or time_ns < self.end_ns)

    def __repr__(self) -> str:
        return f"Piece({len(self.entity_ids)} entities, {self.start_ns}..{self.end_ns})"


class RecorderReader:
    """`history/history_during_period` on a connection of its own, opened when first needed: an answer over the
    message limit closes that connection (1009), never the live one with the events HA queued for it, and the
    piece is asked again in halves."""

    def __init__(self, connect: Callable[[], AbstractAsyncContextManager[HAConnection]], timeout_s: float,
                 on_too_large: Callable[[Piece, str], None], now_ns: Callable[[], int] = time.time_ns) -> None:
        self._connect, self._timeout_s, self._on_too_large, self._now_ns = connect, timeout_s, on_too_large, now_ns
        self._stack = contextlib.AsyncExitStack()
        self._conn: HAConnection | None = None
        self.splits = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        self._conn = None
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()

    async def _connection(self) -> HAConnection:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(self._connect())
        return self._conn

    async def pieces(self, entity_ids: list[str], start_ns: int, end_ns: int | None = None,
                     attributes: bool = True) -> AsyncIterator[tuple[History, list[bytes]]]:
        """The rows of `entity_ids` from `start_ns` (before `end_ns`), a piece at a time, each with the rows that
        could not be decoded; a state over the message limit on its own is reported to `on_too_large` and left out."""
        todo = [Piece(entity_ids, start_ns, end_ns)]
        while todo:
            piece = todo.pop()
            try:
                history, unreadable = await self._ask(piece, attributes)
            except MessageTooBig as exc:
                halves = piece.halves(self._now_ns())
                if halves is None:
                    self._on_too_large(piece, str(exc))
                else:
                    self.splits += 1
                    todo.extend(reversed(halves))
                continue
            yield history, unreadable

    async def _ask(self, piece: Piece, attributes: bool) -> tuple[History, list[bytes]]:
        conn = await self._connection()
        try:
            raw = await conn.command(history_command(piece.entity_ids, piece.start_ns, piece.end_ns, attributes),
                                     self._timeout_s)
        except MessageTooBig:
            await self._close()
            raise
        try:
            history, unreadable = decode_history(bytes(raw))
        except frames.UNDECODABLE as exc:  # not even rows by entity
            raise CommandFailed("history/history_during_period", "malformed_answer", str(exc)[:200]) from None
        return {entity_id: [row for row in rows if piece.holds(float_ns(row.lu))]
                for entity_id, rows in history.items()}, unreadable

    async def has_committed(self, probes: dict[str, int], current: dict[str, int], start_ns: int,
                            removed: set[str]) -> bool:
        """Whether the recorder holds every state since `start_ns`: one of the `probes` (states that arrived live
        after the subscription) is in its history; or, with no probe yet, the current state of every entity
        changed since `start_ns` is, and no entity was `removed` meanwhile (its states prove nothing)."""
        if probes:
            wanted = set(probes.items())
            async for history, _ in self.pieces(sorted(probes), min(probes.values()), attributes=False):
                if not wanted.isdisjoint(_keys(history)):
                    return True
            return False
        changed = {(entity_id, time_ns) for entity_id, time_ns in current.items() if time_ns >= start_ns}
        found: set[Key] = set()
        if changed:
            async for history, _ in self.pieces(sorted({entity_id for entity_id, _ in changed}), start_ns,
                                                attributes=False):
                found.update(_keys(history))
        return changed <= found and not removed


def _keys(history: History) -> set[Key]:
    return {(entity_id, float_ns(row.lu)) for entity_id, rows in history.items() for row in rows}
