"""The CI-sized torture run: 4 reader processes check every answer through 1,000 swaps of a
changing registry and 5 kill -9s of the daemon (`bench/torture.py`; the soak is `python -m
bench torture --duration S --kill-trials N`)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("zmq", reason="pyzmq is not installed (the daemon extra)")

from bench import torture  # noqa: E402  (after the skip: it starts daemons)


def test_readers_never_see_a_wrong_answer_through_swaps_and_kills() -> None:
    options = torture.Options(readers=4, swaps=1000, kill_trials=5)
    outcome = torture.run(options, log=lambda _: None)
    assert outcome.failures() == [], "\n".join([*outcome.failures(), *outcome.notes])
    assert outcome.swaps >= 1000
    assert outcome.kill_trials == 5
    assert len(outcome.readers) == 4
    for reader in outcome.readers:
        assert reader["wrong"] == 0 and reader["exceptions"] == 0, reader["examples"]
        assert reader["checks"] > 0
        # every reader followed the registry to its end: the last version written
        assert reader["last_version"] >= 1000 + 1
