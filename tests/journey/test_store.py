"""The journey store against the machine's Redis: where an order is, whatever the hop order."""

import random

from obskit.journey import Deadlines, Hop, JourneyStore

T0 = 1_800_000_000.0


def hop(oid, stage, at, channel="b2c", service="svc"):
    return Hop(oid, stage, channel, T0 + at, service, "host:1", "ab" * 16)


def test_state_moves_forward_by_stage_rank_whatever_order_the_hops_arrive_in(store):
    # The MES's batch lands before the relay's: received is written before published.
    store.write([hop("o1", "accepted", 0), hop("o1", "stored", 0.01)])
    store.write([hop("o1", "received", 0.3, service="mes")])
    store.write([hop("o1", "published", 0.2, service="relay")])
    state, hops = store.journey("o1")
    assert state.stage == "received" and state.since == T0 + 0.3 and not state.terminal
    assert [h.stage for h in hops] == ["accepted", "stored", "published", "received"]
    assert {h.service for h in hops} == {"svc", "mes", "relay"}
    assert store.members() == [("accepted", "b2c"), ("received", "b2c"), ("stored", "b2c")]


def test_mes_stages_follow_time_and_terminal_states_are_final(store):
    store.write([hop("o1", "received", 1), hop("o1", "priced", 2), hop("o1", "scheduled", 3),
                 hop("o1", "done", 4)])
    store.write([hop("o1", "printing", 3.5)])  # a straggler after done
    state, hops = store.journey("o1")
    assert state.stage == "done" and state.terminal
    assert len(hops) == 5
    # Finished orders leave the stage sets and the active set; their keys expire.
    assert store.waiting(Deadlines.parse("*=0s/0s"), now=T0 + 100) == []
    assert store._r.ttl(store.base + "h:o1") > 0
    assert store._r.zcard(store.base + "active") == 0


def test_a_dead_lettered_order_moves_again_when_replayed(store):
    store.write([hop("o1", "received", 1), hop("o1", "dead_lettered", 2)])
    state, _ = store.journey("o1")
    assert state.stage == "dead_lettered" and state.terminal
    res = store.write([hop("o1", "received", 10), hop("o1", "done", 11)])
    assert not any(r.repeated for r in res)  # a replay is not a duplicate
    assert store.journey("o1")[0].stage == "done"


def test_write_reports_the_time_spent_in_the_stage_left_and_repeats(store):
    hops = [hop("o1", "received", 1), hop("o1", "priced", 3.5), hop("o1", "priced", 3.6)]
    res = {r.hop: r for r in store.write(hops)}
    assert hops[0] not in res  # nothing to report: the order's first hop
    assert (res[hops[1]].left_stage, res[hops[1]].left_after) == ("received", 2.5)
    assert res[hops[2]].repeated and res[hops[2]].left_stage is None
    # A hop without a channel takes the order's.
    res2 = store.write([hop("o1", "scheduled", 4, channel="unknown")])
    assert res2[0].channel == "b2c" and store.journey("o1")[0].channel == "b2c"


def test_sweep_counts_each_stage_exactly_and_declares_lost_orders_once(store):
    rng = random.Random(7)
    path = ["accepted", "stored", "published", "received", "priced", "done"]
    truth: dict[tuple[str, str], list[float]] = {}
    hops = []
    for i in range(600):
        ch = rng.choice(["b2c", "b2b"])
        stop = rng.randrange(len(path))
        start = rng.uniform(0, 100)
        for j, stage in enumerate(path[:stop + 1]):
            hops.append(hop(f"o{i}", stage, start + j, channel=ch))
        if path[stop] != "done":
            truth.setdefault((path[stop], ch), []).append(start + stop)
    rng.shuffle(hops)  # batches from several processes interleave
    for k in range(0, len(hops), 97):
        store.write(hops[k:k + 97])

    deadlines = Deadlines.parse("*=30s/60s,published@b2b=10s/20s")
    now = T0 + 130
    counts, forgotten = store.sweep(deadlines, now=now)
    assert forgotten == 0
    by = {(c.stage, c.channel): c for c in counts}
    for (stage, ch), sinces in truth.items():
        d = deadlines.for_stage(stage, ch)
        c = by[(stage, ch)]
        assert c.in_stage == len(sinces)
        assert c.stuck == sum(1 for s in sinces if T0 + s <= now - d.stuck)
        assert c.lost == c.newly_lost == sum(1 for s in sinces if T0 + s <= now - d.lost)
        assert abs(c.oldest_age - (now - T0 - min(sinces))) < 1e-3
    # Lost orders are declared once; a second sweep finds none new.
    counts2, _ = store.sweep(deadlines, now=now + 1)
    lost_at = {k: deadlines.for_stage(*k).lost for k in truth}
    assert sum(c.newly_lost for c in counts2) == sum(
        1 for k, v in truth.items() for t in v if now - lost_at[k] < T0 + t <= now + 1 - lost_at[k])
    listed = store.waiting(deadlines, now=now, lost_only=True)
    assert len(listed) == sum(c.lost for c in counts)
    assert all(w.lost for w in listed)
    assert [w.since for w in listed] == sorted(w.since for w in listed)


def test_a_lost_order_that_moves_again_is_found(store):
    store.write([hop("o1", "published", 0)])
    counts, _ = store.sweep(Deadlines.parse("*=1s/2s"), now=T0 + 10)
    assert [c.newly_lost for c in counts] == [1]
    assert store.journey("o1")[0].lost_at == T0 + 10
    res = store.write([hop("o1", "received", 11)])
    assert res[0].found
    assert store.journey("o1")[0].lost_at is None


def test_retention_and_size_cap_forget_the_oldest_unfinished_orders(prefix):
    store = JourneyStore("redis://127.0.0.1:6379/0", prefix, retention=100, max_orders=5)
    try:
        store.write([hop(f"o{i}", "published", i) for i in range(10)])
        counts, forgotten = store.sweep(Deadlines(), now=T0 + 102.5)
        # o0..o1 are past the 100 s retention, then the cap keeps the newest 5 of the rest.
        assert forgotten == 5
        assert counts[0].in_stage == 5
        assert store.journey("o0") == (None, [])
        assert store.journey("o9")[0].stage == "published"
    finally:
        store.close()


def test_the_sweeper_publishes_its_deadlines_for_the_cli(store):
    d = Deadlines.parse("published@b2b=1m/10m")
    store.write([hop("o1", "published", 0)])
    store.sweep(d, now=T0)
    assert store.published_deadlines().for_stage("published", "b2b").lost == 600


def test_the_docs_show_the_default_deadline_table(repo_root):
    from obskit.journey._deadlines import markdown_table

    doc = (repo_root / "docs" / "journeys.md").read_text()
    assert markdown_table() in doc, "regenerate with: python -m obskit.journey._deadlines"


def test_deadline_overrides_parse_and_resolve_most_specific_first():
    d = Deadlines.parse("published@b2b=30s/5m,published=1m,*=2h/3h")
    b2b = d.for_stage("published", "b2b")
    assert (b2b.stuck, b2b.lost) == (30, 300)
    assert d.for_stage("published", "b2c").lost == 600  # ten times the stuck deadline
    assert d.for_stage("printing", "b2c").stuck == 7200  # yours beat the defaults
    assert Deadlines().for_stage("printing", "b2c").stuck == 4 * 3600
    assert Deadlines().for_stage("polishing", "b2c").lost == 3600
    for bad in ("published", "published=soon", "=1s", "published=5m/1m"):
        try:
            Deadlines.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
