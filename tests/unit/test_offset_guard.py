"""The worker's offset guard: a skipped input offset is sought back, never applied past."""

from __future__ import annotations

from twinstream.streams.input_offsets import OffsetGuard


def test_contiguous_offsets_apply_and_earlier_ones_are_only_acknowledged() -> None:
    guard = OffsetGuard()
    guard.start({"p0": 100})
    assert [guard.check("p0", o, now=0.0) for o in (98, 99, 100, 101, 102)] == ["ack", "ack", "apply", "apply", "apply"]
    assert guard.expected["p0"] == 103


def test_a_skipped_offset_seeks_once_then_discards_until_it_arrives() -> None:
    guard = OffsetGuard(gap_timeout_s=30.0)
    guard.start({"p0": 100})
    assert guard.check("p0", 100, now=0.0) == "apply"
    # 101..104 skipped by something between the broker and the agent
    assert guard.check("p0", 105, now=1.0) == "seek"
    assert [guard.check("p0", o, now=2.0) for o in (106, 107)] == ["discard", "discard"]  # stale, fetched before the seek
    assert [guard.check("p0", o, now=3.0) for o in range(101, 108)] == ["apply"] * 7
    assert guard.expected["p0"] == 108


def test_a_real_hole_in_a_partition_is_accepted_after_the_timeout() -> None:
    guard = OffsetGuard(gap_timeout_s=30.0)
    guard.start({"p0": 10})
    assert guard.check("p0", 12, now=0.0) == "seek"
    assert guard.check("p0", 12, now=1.0) == "discard"
    assert guard.check("p0", 12, now=29.0) == "seek"  # sought back again while waiting
    assert guard.check("p0", 12, now=30.0) == "apply"
    assert guard.check("p0", 13, now=30.0) == "apply"


def test_a_seek_that_did_not_take_is_repeated_until_the_expected_offset_arrives() -> None:
    """Faust's fetch loop can overwrite a seek with records fetched before it; the guard seeks again."""
    guard = OffsetGuard(gap_timeout_s=30.0, reseek_s=2.0)
    guard.start({"p0": 100})
    verdicts = [guard.check("p0", 400 + i, now=i * 0.5) for i in range(12)]  # later offsets keep coming, 6 s
    assert verdicts.count("seek") == 3 and verdicts[0] == "seek" and set(verdicts) == {"seek", "discard"}
    assert guard.check("p0", 100, now=6.5) == "apply"  # the sought offset arrives: applied, no hole accepted
    assert guard.check("p0", 101, now=6.5) == "apply"


def test_partitions_are_independent_and_a_rebalance_starts_afresh() -> None:
    guard = OffsetGuard()
    guard.start({"p0": 5})
    assert guard.check("p1", 70, now=0.0) == "apply"  # no marker: starts at its first event
    assert guard.check("p0", 6, now=0.0) == "seek"
    guard.start({"p0": 6})
    assert guard.check("p0", 6, now=1.0) == "apply"
