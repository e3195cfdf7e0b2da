"""The figures in docs/performance.md are the benchmarks' result files: throughput, latency, fleet scale,
rebalances and recovery."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "performance.md").read_text()
RESULTS = ROOT / "benchmarks" / "results"


def test_failover_table_is_the_loop_result() -> None:
    summary = json.loads((RESULTS / "failover.json").read_text())["summary"]
    for scenario, counts in summary.items():
        assert f"| {scenario} |" in DOC and f"| {counts['passed']} / {counts['runs']} |" in DOC, scenario
    for name in ("failover_before_partition_senders.json", "failover_before_background_checkpoint.json",
                 "failover_before_worker_waits.json"):
        earlier = json.loads((RESULTS / name).read_text())["summary"]
        assert all(c["passed"] == c["runs"] > 0 for c in earlier.values()) and name in DOC, name
    before = json.loads((RESULTS / "failover_before_offset_guard.json").read_text())["summary"]
    assert f"join {before['join']['passed']}/{before['join']['runs']}" in DOC


def test_recovery_table_is_the_benchmark_result() -> None:
    result = json.loads((RESULTS / "recovery_time.json").read_text())
    assert f"{result['twin_bytes']:,} B" in DOC
    for row in result["recovery"]:
        assert row["ok"], row
        assert f"| {row['twins']:,} | {row['changelog_mb']} MB | " in DOC, row
        assert f"{row['recovery_s']} s" in DOC and f"{row['start_to_serving_s']} s" in DOC, row
    for seconds in result["failover"]["per_partition_s"].values():
        assert f"{seconds} s" in DOC, seconds


def test_throughput_table_is_the_benchmark_result() -> None:
    result = json.loads((RESULTS / "throughput.json").read_text())
    assert result["config"]["messages"] == 200_000 and result["config"]["entities"] == 1_000
    assert result["peer"]["ran"], result["peer"]
    for arm, rate in result["rates"].items():
        assert rate is not None, arm
        assert f"| {arm} |" in DOC and f"{rate:,.0f}" in DOC, (arm, rate)
        busy = result["foreign_cpu_busy"][arm][-1]
        assert f"{busy:.0%}" in DOC, (arm, busy)
    for key in ("ratio_c_a", "ratio", "ratio_d_c", "ratio_c_peer"):
        assert f"{result[key]:.2f}" in DOC, key
    for when in ("before", "after"):
        assert ", ".join(f"{x:.2f}" for x in result["load_average"][when]) in DOC, when


def test_latency_table_is_the_benchmark_result() -> None:
    result = json.loads((RESULTS / "throughput.json").read_text())
    runs = result["latency"]["runs"]
    assert len(runs) >= 2 and len({run["checkpoint_interval_s"] for run in runs}) == len(runs)
    assert (result["latency_p50_ms"], result["latency_p99_ms"]) == (runs[0]["p50_ms"], runs[0]["p99_ms"])
    for run in runs:
        row = (
            f"| {run['checkpoint_interval_s']} s | {run['target_rate']:,.0f} | {run['samples']:,} | "
            f"{run['p50_ms']} ms | {run['p99_ms']} ms |"
        )
        assert row in DOC, row


def test_fleet_scale_tables_are_the_benchmark_results() -> None:
    for name in ("fleet_scale.json", "fleet_scale_evict_100k.json", "fleet_scale_evict.json"):
        result = json.loads((RESULTS / name).read_text())
        assert result["sizes"], name
        idle_s = result["config"]["eviction_settings"]["twin_idle_evict_s"]
        evicted = f"{idle_s:.0f} s" if idle_s else "never"
        for row in result["sizes"]:
            assert row["recovery"]["ok"] and row["dead_letters"] == 0, row
            cells = (
                f"| {row['entities']:,} | {evicted} | {row['resident_twins']:,} | {row['rss_end_mb']:,.0f} MB | "
                f"{row['rss_per_resident_twin_bytes']:,} B | {row['checkpoints']['mean_s']} s | "
                f"{row['changelog']['bytes_per_checkpoint'] / 1e6:.1f} MB | {row['recovery']['recovery_s']} s |"
            )
            assert cells in DOC, (name, cells)
        for skipped in result["skipped"]:
            assert f"{skipped['entities']:,}" in DOC
            assert f"{result['extrapolation']['rss_mb'][str(skipped['entities'])] / 1000:.1f} GB" in DOC
    evict = json.loads((RESULTS / "fleet_scale_evict.json").read_text())["sizes"][-1]
    assert f"{evict['resident_twins_peak']:,} twins at once" in DOC
    assert f"{evict['recovery']['recovered_twins']:,} twins in {evict['recovery']['recovery_s']} s" in DOC


def test_fetch_wait_table_is_the_benchmark_result() -> None:
    result = json.loads((RESULTS / "fetch_wait.json").read_text())
    assert len(result["runs"]) >= 2
    for run in result["runs"]:
        row = f"| {run['fetch_max_wait_ms']:,} ms | {run['records']:,} | {run['p50_ms']} ms | {run['p99_ms']} ms |"
        assert row in DOC, row


def test_fetch_hold_table_is_the_benchmark_result() -> None:
    result = json.loads((RESULTS / "fetch_wait_hold_rule.json").read_text())
    assert [run["fetch_max_wait_ms"] for run in result["runs"]] == [500, 250, 249, 100]
    for run in result["runs"]:
        row = (f"| {run['fetch_max_wait_ms']:,} ms | {run['records']:,} | {run['p50_ms']} ms | {run['p99_ms']} ms | "
               f"{run['max_ms']} ms |")
        assert row in DOC, row


def test_latency_before_the_fetch_wait_is_its_result_file() -> None:
    run = json.loads((RESULTS / "throughput_quiet_before_latency.json").read_text())["latency"]["runs"][0]
    assert f"{run['target_rate']:,.0f} events/s was p50 {run['p50_ms']} ms and p99 {run['p99_ms']} ms" in DOC


def test_profile_shares_are_the_profile_result() -> None:
    shares = json.loads((RESULTS / "throughput_profile.json").read_text())["profile_c"]["inclusive_pct"]
    assert f"{shares['  TwinProcessor.process']:.0f}% of the worker's main thread" in DOC
    assert f"{shares['idle: event loop waiting in epoll']:.0f}% idle" in DOC


def test_latency_at_the_default_fetch_wait_is_its_result_file() -> None:
    result = json.loads((RESULTS / "throughput_latency_default_wait.json").read_text())
    assert f"gave c {result['rates']['c']:,.0f}" in DOC
    run = result["latency"]["runs"][0]
    assert f"{run['target_rate']:,.0f} events/s was p50 {run['p50_ms']} ms and p99 {run['p99_ms']} ms" in DOC


def test_intake_against_stream_is_its_result_file() -> None:
    result = json.loads((RESULTS / "throughput_intake_vs_stream.json").read_text())
    for arm in ("c", "s"):
        assert f"{result['rates'][arm]:,.0f} " in DOC, arm
        assert ", ".join(f"{x:,.0f}" for x in result["runs"][arm]) in DOC, arm
    assert f"{result['ratio_c_s']:.2f}×" in DOC
    decisions = (ROOT / "docs" / "decisions.md").read_text()
    assert f"{result['rates']['c']:,.0f} events/s through the intake against {result['rates']['s']:,.0f}" in decisions


def test_latency_by_fetch_wait_is_its_result_files() -> None:
    for name in ("throughput_latency_wait_500_intake", "throughput_latency_wait_500_stream", "throughput_latency_wait_50_intake",
                 "throughput_latency_background_checkpoint_wait_500", "throughput_latency_background_checkpoint_wait_50"):
        result = json.loads((RESULTS / f"{name}.json").read_text())
        run = result["latency"]["runs"][0]
        row = (
            f"`{name}.json` | {result['rates']['c']:,.0f} | {run['target_rate']:,.0f} | {run['samples']:,} | "
            f"{run['p50_ms']} ms | {run['p90_ms']} ms | {run['p99_ms']} ms |"
        )
        assert row in DOC, row


def test_earlier_throughput_runs_are_their_result_files() -> None:
    for name in ("throughput_before_batch_intake.json", "throughput_before_partition_senders.json",
                 "throughput_before_background_checkpoint.json", "throughput_before_worker_waits.json"):
        result = json.loads((RESULTS / name).read_text())
        rates = ", ".join(f"{arm} {result['rates'][arm]:,.0f}" for arm in ("a", "b", "c", "d", "r", "p"))
        ratios = ", ".join(f"{label} {result[key]:.2f}" for label, key in
                           (("c/a", "ratio_c_a"), ("c/b", "ratio"), ("d/c", "ratio_d_c"), ("r/p", "ratio_c_peer")))
        flat = " ".join(DOC.split())
        assert f"{rates} events/s: {ratios}" in flat, (name, rates, ratios)


def test_checkpoint_side_by_side_is_its_result_files() -> None:
    flat = " ".join(DOC.split())
    for variant, words in (("inline", "events/s with the checkpoint in line"), ("background", "with it in the background")):
        runs = [json.loads((RESULTS / "checkpoint_side_by_side" / f"{variant}_{k}.json").read_text()) for k in (1, 2, 3)]
        rates = ", ".join(f"{run['rates']['c']:,.0f}" for run in runs)
        assert f"{rates} {words}" in flat, (variant, rates)
        assert all(run["config"]["env"] == runs[0]["config"]["env"] for run in runs)


def test_worker_waits_side_by_side_is_its_result_files() -> None:
    flat = " ".join(DOC.split())
    for folder in ("worker_waits_side_by_side", "worker_waits_side_by_side_without_put_off"):
        runs = {variant: [json.loads((RESULTS / folder / f"{variant}_{k}.json").read_text())
                          for k in (1, 2, 3)] for variant in ("before", "after")}
        before, after = (", ".join(f"{run['rates']['c']:,.0f}" for run in runs[v]) for v in ("before", "after"))
        assert f"arm c {before} events/s before and {after} after" in flat, (folder, before, after)
        assert all(run["config"]["env"] == runs["before"][0]["config"]["env"] != [] for v in runs for run in runs[v])


def test_worker_waits_full_run_without_the_put_off_is_its_result_file() -> None:
    result = json.loads((RESULTS / "throughput_without_put_off.json").read_text())
    rates = ", ".join(f"{arm} {result['rates'][arm]:,.0f}" for arm in ("a", "b", "c", "d", "r", "p"))
    ratios = ", ".join(f"{label} {result[key]:.2f}" for label, key in
                       (("c/a", "ratio_c_a"), ("c/b", "ratio"), ("d/c", "ratio_d_c"), ("r/p", "ratio_c_peer")))
    assert f"{rates} events/s: {ratios}" in " ".join(DOC.split()), (rates, ratios)


def test_worker_waits_latency_side_by_side_is_its_result_files() -> None:
    flat = " ".join(DOC.split())
    runs = {variant: [json.loads((RESULTS / "worker_waits_latency_side_by_side_without_put_off" / f"{variant}_{k}.json").read_text())
                      for k in (1, 2)] for variant in ("before", "after")}
    rates = {v: " and ".join(f"{run['rates']['c']:,.0f}" for run in runs[v]) for v in runs}
    assert f"arm c {rates['before']} events/s before, {rates['after']} after" in flat, rates
    for key in ("p50_ms", "p99_ms"):
        for variant in runs:
            values = " and ".join(f"{run['latency']['runs'][0][key]}" for run in runs[variant])
            assert f"{values} ms {variant}" in flat, (key, variant, values)


def test_fetch_wait_at_the_latency_test_rate_is_its_result_file() -> None:
    result = json.loads((RESULTS / "fetch_wait_5k_4_partitions.json").read_text())
    assert result["partitions"] == 4
    for run in result["runs"]:
        assert f"p50\n  {run['p50_ms']} ms" in DOC or f"p50 {run['p50_ms']} ms" in DOC, run
        assert f"{run['p99_ms']} ms" in DOC, run


def test_latency_by_partition_count_is_its_result_files() -> None:
    for partitions in (1, 4):
        result = json.loads((RESULTS / f"throughput_latency_partitions_{partitions}.json").read_text())
        assert result["config"]["partitions"] == partitions
        run = result["latency"]["runs"][0]
        text = DOC.replace("\n  ", " ")
        assert f"{run['p50_ms']} ms at {run['target_rate']:,.0f} events/s" in text, run
        assert f"{run['p99_ms']}" in text, run


def test_put_off_memory_is_its_result_files() -> None:
    flat = " ".join(DOC.split())
    capped, waiting = (json.loads((RESULTS / "put_off_memory" / name).read_text()) for name in ("cap_100000.json", "cap_0.json"))
    assert f"ended at {capped['worker_rss_mb_end']:,.0f} MB and {waiting['worker_rss_mb_end']:,.0f} MB of RSS" in flat
    assert f"c {capped['rates']['c']:,.0f} and {waiting['rates']['c']:,.0f} events/s" in flat


def test_snapshot_side_by_side_is_its_result_files() -> None:
    runs = {(side, wait, pair): json.loads((RESULTS / "snapshot_side_by_side" / f"{side}_wait_{wait}_{pair}.json").read_text())
            for side in ("before", "after") for wait in (500, 50) for pair in (1, 2)}
    for (side, wait, pair), result in runs.items():
        assert result["config"]["env"] == [f"TWINSTREAM_FETCH_MAX_WAIT_MS={wait}"]
        run = result["latency"]["runs"][0]
        row = (f"| {wait} ms | {pair} | {side} | {result['rates']['c']:,.0f} | {run['target_rate']:,.0f} | {run['samples']:,} "
               f"| {run['p50_ms']} ms | {run['p90_ms']} ms | {run['p99_ms']} ms | {run['max_ms']} ms |")
        assert row in DOC, row
    flat = " ".join(DOC.split())
    at_50 = {(side, pair): runs[(side, 50, pair)]["latency"]["runs"][0] for side in ("before", "after") for pair in (1, 2)}
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        assert all(at_50[("after", pair)][key] < at_50[("before", pair)][key] for pair in (1, 2)), key
    lower = {key: " and ".join(f"{at_50[('before', p)][key] - at_50[('after', p)][key]:.0f}" for p in (1, 2))
             for key in ("p50_ms", "p99_ms")}
    assert f"(p50 by {lower['p50_ms']} ms, p99 by {lower['p99_ms']} ms;" in flat, lower
    max_lower = sum(at_50[("after", p)]["max_ms"] < at_50[("before", p)]["max_ms"] for p in (1, 2))
    assert f"the maximum was lower in {'one' if max_lower == 1 else 'both'})" in flat


def test_journal_memory_is_its_result_files() -> None:
    flat = " ".join(DOC.split())
    journal = json.loads((RESULTS / "journal_memory" / "journal.json").read_text())
    assert f"a decoded sample at {journal['decoded_sample_bytes']:,} B of heap" in flat
    assert f"growing {journal['journal_bytes_per_event']:,} B an event over {journal['events_waiting']:,} events" in flat
    runs = {(side, pair): json.loads((RESULTS / "journal_memory" / f"{side}_{pair}.json").read_text())
            for side in ("before", "after") for pair in (1, 2)}
    for (side, pair), run in runs.items():
        row = (f"| {pair} | {side} | {run['rates']['c']:,.0f} | {run['worker_rss_mb_first_output']:,.0f} MB "
               f"| {run['worker_rss_mb_end']:,.0f} MB |")
        assert row in DOC, row
    smaller = " and ".join(f"{runs[('before', p)]['worker_rss_mb_end'] - runs[('after', p)]['worker_rss_mb_end']:,.0f}"
                           for p in (1, 2))
    assert f"The worker ended {smaller} MB smaller" in flat, smaller


def test_resident_twin_memory_is_its_result_files() -> None:
    flat = " ".join(DOC.split())
    before, after = (json.loads((RESULTS / "journal_base" / f"resident_{side}.json").read_text()) for side in ("before", "after"))
    assert before["twins"] == after["twins"] and before["pickle_bytes"] == after["pickle_bytes"]
    assert f"loads {after['twins']:,} twins from the table" in flat
    assert (f"resident twin at {before['heap_per_resident_twin_bytes']:,} B before the change and "
            f"{after['heap_per_resident_twin_bytes']:,} B after it, pickles of {after['pickle_bytes']:,} B") in flat
    assert before["heap_per_resident_twin_bytes"] - after["heap_per_resident_twin_bytes"] > 0.8 * after["pickle_bytes"]
