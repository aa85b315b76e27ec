"""Store.stats(): appends, bytes and commits counted per commit; fsync latency timed on its thread."""

from __future__ import annotations

from robustmq.store.stats import FSYNC_BUCKETS_S, FsyncTimings


async def test_stats_count_appends_bytes_and_commits(open_store):
    st = await open_store(fsync="never")
    st.create_stream({"name": "s"})
    before = st.stats()
    await st.append("s", b"abc")
    acks = [st.append("s", b"x" * 10) for _ in range(4)]
    for ack in acks:
        await ack
    after = st.stats()
    assert after.appends - before.appends == 5
    assert after.appended_bytes - before.appended_bytes >= 43  # payloads plus record framing
    assert after.commits - before.commits == 2
    assert after.fsync.count == 0  # never: nothing is synced


async def test_fsync_always_observes_one_latency_per_synced_file(open_store):
    st = await open_store(fsync="always")
    st.create_stream({"name": "s"})
    before = st.stats().fsync
    await st.append("s", b"payload")
    after = st.stats().fsync
    assert after.count > before.count
    assert after.sum_s > before.sum_s
    cumulative = after.cumulative()
    assert cumulative[-1] == ("+Inf", after.count)
    assert [n for _, n in cumulative] == sorted(n for _, n in cumulative)


def test_timings_put_each_latency_in_the_first_bucket_that_holds_it():
    t = FsyncTimings()
    t.observe(FSYNC_BUCKETS_S[0])
    t.observe(FSYNC_BUCKETS_S[-1] * 10)
    snap = t.snapshot()
    assert snap.count == 2
    assert snap.buckets[0] == 1 and snap.buckets[-1] == 1
    assert snap.cumulative()[0] == (str(FSYNC_BUCKETS_S[0]), 1)
