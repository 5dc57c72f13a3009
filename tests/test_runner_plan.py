"""How many reducers and workers a run uses by default (pure functions of the plan)."""

from __future__ import annotations

from mapred.engine.runner import default_reducers, workers_wanted


def test_default_reducers_one_per_core_but_not_more_than_shards():
    assert default_reducers(slots=6, shards=1) == 1  # a tiny input: one part file
    assert default_reducers(slots=6, shards=4) == 4
    assert default_reducers(slots=2, shards=8) == 2
    assert default_reducers(slots=2, shards=0) == 1  # an empty corpus still has a part file


def test_workers_wanted_is_a_share_of_the_tasks_at_least_one_at_most_cores():
    assert workers_wanted(cores=2, slots=6, tasks=1) == 1  # every host keeps one worker
    assert workers_wanted(cores=2, slots=2, tasks=1) == 1
    assert workers_wanted(cores=2, slots=2, tasks=8) == 2
    assert workers_wanted(cores=8, slots=10, tasks=5) == 4  # a bigger host gets a bigger share
    assert workers_wanted(cores=2, slots=10, tasks=5) == 1
    assert workers_wanted(cores=4, slots=4, tasks=100) == 4
