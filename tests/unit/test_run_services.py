"""Several services in one process (`run_services`, what `all-in-one run` runs on): a signal stops them all (exit
0); one that ends on its own, or crashes, stops the others and the process exits 1, naming it. Each case runs in a
process of its own (the runner sets up logging and freezes the GC for its process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEADER = textwrap.dedent("""
    import asyncio, os, signal, sys
    import typer
    from homeiq.shared.cli import run_services
    from homeiq.shared.options import LogSettings

    async def waits(stop):
        await stop.wait()
        await asyncio.sleep(0.3)  # a clean stop takes a while (a batch in flight)
        print("waits saw stop", flush=True)

    async def ends(stop):
        await asyncio.sleep(0.2)

    async def crashes(stop):
        await asyncio.sleep(0.2)
        raise RuntimeError("boom")

    async def exits(stop):
        await asyncio.sleep(0.2)
        raise typer.Exit(3)

    async def signals(stop):
        await asyncio.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)
        await stop.wait()
        print("signals saw stop", flush=True)
""")


def run(mains: str) -> tuple[int, list[str], list[dict[str, object]]]:
    code = HEADER + textwrap.dedent(f"""
        try:
            run_services('test', LogSettings(log_format='json'), {{{mains}}})
        except typer.Exit as exit:
            sys.exit(exit.exit_code)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert all(line.startswith("{") for line in done.stderr.splitlines()), done.stderr  # no bare traceback
    return done.returncode, done.stdout.splitlines(), lines


@pytest.mark.parametrize(("other", "event"), [("ends", "service_ended"), ("crashes", "crashed")])
def test_one_that_ends_or_crashes_stops_the_others_and_the_process_exits_1(other: str, event: str) -> None:
    code, out, logs = run(f"'a': lambda: waits, 'b': lambda: {other}")
    assert code == 1
    assert out == ["waits saw stop"]
    assert [(line["event"], line["service"]) for line in logs if line["event"] == event] == [(event, "b")]


def test_an_exit_one_asks_for_is_taken_after_the_others_stopped() -> None:
    code, out, _ = run("'a': lambda: waits, 'b': lambda: exits")
    assert code == 3
    assert out == ["waits saw stop"]


def test_a_signal_stops_every_service_and_the_process_exits_0() -> None:
    code, out, logs = run("'a': lambda: waits, 'b': lambda: signals")
    assert code == 0, logs
    assert sorted(out) == ["signals saw stop", "waits saw stop"]
    assert not [line for line in logs if line["event"] in ("crashed", "service_ended")]


def test_a_single_service_that_returns_exits_0_as_before() -> None:
    code, _, logs = run("'a': lambda: ends")
    assert code == 0, logs
