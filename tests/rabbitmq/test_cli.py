"""On-call CLI: obskit dlq list/show/replay/purge and obskit audit rabbitmq."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aio_pika
from rmq_helpers import queue_depth, wait_for

from obskit.cli import main as cli_main
from obskit.rabbitmq import Consumer, DeadLetterQueues, Delivery, PermanentError, Publisher


async def _dead_letter(url: str, topology, bodies: list[dict]) -> list[str]:  # type: ignore[no-untyped-def]
    """Publish ``bodies`` to orders.b2c and let a consumer dead-letter them all."""
    async def handler(d: Delivery) -> None:
        if d.data.get("kind") == "timeout":
            raise TimeoutError("pricing timed out")
        raise PermanentError(f"unknown material {d.data.get('material')!r}")

    spec = topology.queue("orders.b2c")
    conn = await aio_pika.connect(url)
    async with conn:
        dlq = await (await conn.channel()).get_queue(spec.dlq)
        async with Publisher(url) as pub, Consumer(spec, handler, url=url):
            ids = [await pub.publish("orders", "b2c", b, order_id=f"o-{i}")
                   for i, b in enumerate(bodies)]

            async def depth() -> bool:
                return (await dlq.declare()).message_count == len(bodies)

            await wait_for(depth, timeout=15, what="dead letters")
    return ids


def _run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    capsys.readouterr()  # drop log lines printed before the command
    rc = cli_main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


async def test_dlq_show_groups_by_error_type_and_keeps_messages(url, vhost, mgmt, topology,
                                                                capsys):
    await _dead_letter(url, topology, [{"material": "x"}, {"material": "y"},
                                       {"kind": "timeout"}])
    rc, out, _ = await asyncio.to_thread(
        _run, capsys, "dlq", "show", "orders.b2c.dlq", "--json", "--vhost", vhost)
    assert rc == 0
    data = json.loads(out)
    assert data["depth"] == 3
    groups = {g["error_type"]: g for g in data["groups"]}
    assert groups["obskit.rabbitmq.errors.PermanentError"]["count"] == 2
    assert groups["TimeoutError"]["count"] == 1
    assert data["groups"][0]["error_type"] == "obskit.rabbitmq.errors.PermanentError"
    msg = groups["TimeoutError"]["messages"][0]
    assert msg["attempts"] == 3 and msg["order_id"] == "o-2" and msg["reason"] == "exhausted"
    # Show does not consume: it peeks and requeues, which the broker applies asynchronously.
    async def all_back() -> bool:
        return await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 3

    await wait_for(all_back, timeout=10, what="the 3 peeked messages back in the DLQ")
    rc, out, _ = await asyncio.to_thread(
        _run, capsys, "dlq", "show", "orders.b2c.dlq", "--vhost", vhost, "--limit", "2")
    assert rc == 0 and "showing 2" in out and "■" in out


async def test_dlq_list_shows_depth_and_sources(url, vhost, mgmt, topology, capsys):
    await _dead_letter(url, topology, [{"material": "x"}])

    async def listed() -> dict | None:
        rc, out, _ = await asyncio.to_thread(_run, capsys, "dlq", "list", "--json",
                                             "--vhost", vhost)
        assert rc == 0
        rows = {r["queue"]: r for r in json.loads(out)["dlqs"]}
        assert set(rows) == {"orders.b2c.dlq", "orders.b2b.dlq"}
        return rows if rows["orders.b2c.dlq"]["messages"] == 1 else None

    rows = await wait_for(listed, timeout=15, interval=0.5, what="management stats")
    assert rows["orders.b2c.dlq"]["sources"] == ["orders.b2c"]


async def test_replay_by_message_id_and_limit(url, vhost, mgmt, topology, capsys):
    ids = await _dead_letter(url, topology, [{"material": str(i)} for i in range(4)])
    rc, out, _ = await asyncio.to_thread(
        _run, capsys, "dlq", "replay", "orders.b2c.dlq", "--message-id", ids[2],
        "--vhost", vhost, "--no-progress")
    assert rc == 0 and "replayed 1" in out
    conn = await aio_pika.connect(url)
    async with conn:
        q = await (await conn.channel()).get_queue("orders.b2c")
        msg = await q.get(no_ack=True)
        assert msg.message_id == ids[2]
        assert msg.headers["x-obskit-attempt"] == 0
        assert msg.headers["x-obskit-replay-count"] == 1
        assert msg.headers["x-obskit-error-type"] == "obskit.rabbitmq.errors.PermanentError"
    assert await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 3
    rc, _, err = await asyncio.to_thread(
        _run, capsys, "dlq", "replay", "orders.b2c.dlq", "--message-id", "nope",
        "--vhost", vhost, "--no-progress")
    assert rc == 1 and "not found" in err
    assert await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 3  # scanned ones went back
    rc, out, err = await asyncio.to_thread(
        _run, capsys, "dlq", "replay", "orders.b2c.dlq", "--limit", "2", "--vhost", vhost)
    assert rc == 0 and "replayed 2" in out and "msg" in err  # tqdm progress on stderr
    assert await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 1
    assert await queue_depth(mgmt, vhost, "orders.b2c") == 2
    # no selector means all; the source queue's name stands for its DLQ
    rc, out, _ = await asyncio.to_thread(
        _run, capsys, "dlq", "replay", "orders.b2c", "--vhost", vhost, "--no-progress")
    assert rc == 0 and "replayed 1" in out and "orders.b2c.dlq" in out
    assert await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 0
    assert await queue_depth(mgmt, vhost, "orders.b2c") == 3


async def test_interrupted_replay_loses_and_duplicates_nothing(url, vhost, mgmt, topology):
    ids = await _dead_letter(url, topology, [{"material": str(i)} for i in range(5)])
    stop = asyncio.Event()
    done: list[str] = []

    def progress(letter) -> None:  # type: ignore[no-untyped-def]
        done.append(letter.message_id)
        if len(done) == 2:
            stop.set()  # what Ctrl-C does in the CLI

    async with DeadLetterQueues(url) as dlqs:
        result = await dlqs.replay("orders.b2c.dlq", on_progress=progress, stop=stop)
        assert result.interrupted and result.replayed == 2
        remaining = {x.message_id for x in await dlqs.show("orders.b2c.dlq")}
    conn = await aio_pika.connect(url)
    async with conn:
        q = await (await conn.channel()).get_queue("orders.b2c")
        back = {(await q.get(no_ack=True)).message_id for _ in range(2)}
    assert back == set(done)
    assert remaining | back == set(ids) and not remaining & back


async def test_purge_requires_yes_and_a_dlq(url, vhost, mgmt, topology, capsys):
    await _dead_letter(url, topology, [{"material": "x"}, {"material": "y"}])
    rc, _, err = await asyncio.to_thread(_run, capsys, "dlq", "purge", "orders.b2c.dlq",
                                         "--vhost", vhost)
    assert rc == 2 and "--yes" in err
    rc, _, err = await asyncio.to_thread(_run, capsys, "dlq", "purge", "orders.b2c",
                                         "--yes", "--vhost", vhost)
    assert rc == 2 and "not a DLQ" in err
    assert await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 2
    rc, out, _ = await asyncio.to_thread(_run, capsys, "dlq", "purge", "orders.b2c.dlq",
                                         "--yes", "--vhost", vhost)
    assert rc == 0 and "purged 2" in out
    assert await queue_depth(mgmt, vhost, "orders.b2c.dlq") == 0


async def test_audit_passes_on_declared_topology_and_fails_on_a_dlq_less_queue(
        url, vhost, mgmt, topology, capsys):
    argv = ("audit", "rabbitmq", "--critical", "orders.*", "--vhost", vhost)
    rc, out, _ = await asyncio.to_thread(_run, capsys, *argv, "--json")
    report = json.loads(out)
    assert rc == 0, report["failing"]
    roles = {q["name"]: q["role"] for q in report["queues"]}
    assert roles["orders.b2c"] == "work" and roles["orders.b2c.dlq"] == "dlq"
    assert roles["orders.b2c.retry.200ms"] == "retry"
    b2c = next(q for q in report["queues"] if q["name"] == "orders.b2c")
    assert b2c["dead_letter_targets"] == ["orders.b2c.dlq"]
    assert {f["check"] for f in b2c["findings"]} == {"no_consumers"}

    # A DLX by policy counts; a DLX that does not exist does not; no DLX at all fails.
    r = await mgmt._http.put(f"/policies/{vhost}/dlx", json={
        "pattern": r"^orders\.viapolicy$", "apply-to": "queues",
        "definition": {"dead-letter-exchange": "orders.dlx",
                       "dead-letter-routing-key": "orders.b2c"}})
    r.raise_for_status()
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue("orders.viapolicy", durable=True)
        await ch.declare_queue("other.ghost", durable=True,
                               arguments={"x-dead-letter-exchange": "ghost.dlx"})
        await ch.declare_queue("other.queue", durable=True)  # not critical
    rc, out, _ = await asyncio.to_thread(_run, capsys, *argv, "--json")
    report = json.loads(out)
    assert rc == 0, report["failing"]
    checks = {q["name"]: {f["check"] for f in q["findings"]} for q in report["queues"]}
    assert "dlx_missing" in checks["other.ghost"]
    assert "no_dlx" in checks["other.queue"]
    assert "no_dlx" not in checks["orders.viapolicy"]
    conn = await aio_pika.connect(url)
    async with conn:
        await (await conn.channel()).declare_queue("orders.legacy", durable=True)
    # As a real subprocess, the way on-call runs it.
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "obskit", *argv], capture_output=True,
        text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "orders.legacy" in proc.stdout and "FAIL" in proc.stdout
