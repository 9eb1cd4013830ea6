"""Kept bodies: served only in the state they were encoded from, the least recently used dropped first."""

from service.kept_bodies import KeptBodies


def test_a_body_is_served_only_in_the_state_it_was_kept_in():
    kept = KeptBodies()
    kept.keep("job-1", ("running", '{"step": 1}'), b"one")
    assert kept.bodies({"job-1": ("running", '{"step": 1}')}) == {"job-1": b"one"}
    assert kept.bodies({"job-1": ("running", '{"step": 2}'), "job-2": ("running", '{"step": 1}')}) == {}
    kept.keep("job-1", ("succeeded", '{"step": 2}'), b"two")
    assert kept.bodies({"job-1": ("succeeded", '{"step": 2}')}) == {"job-1": b"two"}


def test_past_its_bytes_the_least_recently_used_go_first():
    kept = KeptBodies(max_bytes=10)
    kept.keep("a", 1, b"aaaa")
    kept.keep("b", 1, b"bbbb")
    assert kept.bodies({"a": 1}) == {"a": b"aaaa"}  # now b is the least recently used
    kept.keep("c", 1, b"cccc")
    assert kept.bodies({"a": 1, "b": 1, "c": 1}) == {"a": b"aaaa", "c": b"cccc"}
    kept.keep("a", 2, b"a" * 10)  # replaces a's body, and leaves no room for c's
    assert kept.bodies({"a": 2, "c": 1}) == {"a": b"a" * 10}
