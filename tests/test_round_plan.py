"""The round planner alone (engine/runtime/round_plan.py): whatever waits, a round that can start
something does (a plan that starts nothing while nothing runs would leave the worker asleep with
requests in line), within its budget, shortest uncached prefill first among those waiting alike."""
from __future__ import annotations

import random

from engine.runtime.generation import SamplingParams
from engine.runtime.requests import ScheduledRequest
from engine.runtime.round_plan import MIN_ROUND_TOKENS, WARM_SLICE, PrefillPace, plan_round


def request(i: int, prompt_len: int, waited: float = 0.0, background: bool = False) -> ScheduledRequest:
    params = SamplingParams(temperature=0.0, max_new_tokens=32, background=background)
    return ScheduledRequest(id=i, prompt=[i] * prompt_len, params=params, max_new=32, handle=None,
                            submitted=100.0 - waited)


def plan(line, running=(), cached=lambda prompt: 0, *, can_slice=True, slice_due=True, max_batch=16,
         max_tokens=1 << 20, pace=None):
    return plan_round(list(line), list(running), cached, pace or PrefillPace(1024), can_slice=can_slice,
                      slice_due=slice_due, max_batch=max_batch, max_tokens=max_tokens, now=100.0)


def test_every_round_with_room_starts_something():
    rng = random.Random(5)
    for case in range(2000):
        line = [request(i, rng.choice([1, 20, 200, 255, 256, 300, 1023, 1024, 1025, 5000]),
                        waited=rng.random() * 5, background=rng.random() < 0.3) for i in range(rng.randint(1, 6))]
        line.sort(key=lambda r: r.params.background)  # the waiting line's order
        running = [request(100 + i, 50) for i in range(rng.randint(0, 3))]
        result = plan(line, running, can_slice=rng.random() < 0.8, slice_due=rng.random() < 0.5)
        if not running:
            assert result.joining or result.slicing, (case, [(len(r.prompt), r.params.background) for r in line])
        if result.slicing is not None:
            assert 0 < result.slice_tokens < len(result.slicing.prompt)


def measured(tokens_per_s: float) -> PrefillPace:
    pace = PrefillPace(1024)
    for _ in range(40):
        pace.record(int(tokens_per_s), 1.0)
    return pace


def test_a_short_question_goes_before_a_long_prompt_that_waited_a_little_longer():
    long = request(1, 3000, waited=0.5)
    short = request(2, 40, waited=0.1)
    result = plan([long, short], running=[request(9, 50)], pace=measured(3000))
    assert result.joining == [short]
    assert result.slicing is long and result.slice_tokens >= MIN_ROUND_TOKENS


def test_a_long_prompt_that_waited_long_goes_first():
    long = request(1, 600, waited=30.0)
    short = request(2, 40, waited=0.1)
    assert plan([long, short], running=[request(9, 50)]).slicing is long


def test_cached_prefixes_count_nothing_against_the_budget():
    turn = request(1, 3000)
    result = plan([turn], running=[request(9, 50)], cached=lambda prompt: 2990)
    assert result.joining == [turn]


def test_without_slicing_the_first_goes_in_whole_and_the_rest_wait():
    first, second = request(1, 3000, waited=2.0), request(2, 3000, waited=1.0)
    result = plan([first, second], running=[request(9, 50)], can_slice=False)
    assert result.joining == [first] and result.slicing is None


def test_a_background_prompt_is_sliced_only_in_a_round_that_starts_no_answer():
    answer = request(1, 40)
    part = request(2, 1750, background=True)
    assert plan([answer, part]).joining == [answer]
    assert plan([answer, part]).slicing is None
    alone = plan([part], running=[request(9, 50)], slice_due=True)
    assert alone.slicing is part and alone.slice_tokens == WARM_SLICE
    assert plan([part], running=[request(9, 50)], slice_due=False).slicing is None


def test_the_budget_follows_the_measured_rate_within_its_bounds():
    pace = measured(3000)
    assert abs(pace.budget - 3000 * pace.round_s) <= 1
    assert measured(100).budget == MIN_ROUND_TOKENS
    assert measured(100_000).budget == 1024
    assert pace.budget_beside(0) == 1024
    assert PrefillPace(8192, paced=False).budget == 8192


def test_only_the_first_waiting_answers_are_ranked_each_round():
    """Under a full queue a round ranks the first RANKED_ANSWERS by arrival (each costs a look
    through the prefix cache under the scheduler's lock); a short one behind them waits its turn."""
    from engine.runtime.round_plan import RANKED_ANSWERS

    line = [request(i, 2000, waited=1.0) for i in range(RANKED_ANSWERS)] + [request(99, 20, waited=0.5)]
    looked: list[int] = []

    def cached(prompt):
        looked.append(prompt[0])
        return 0

    result = plan(line, running=[request(9, 50)], cached=cached, pace=measured(3000))
    assert 99 not in looked and result.joining == []
    assert plan(line[1:], running=[request(9, 50)], pace=measured(3000)).joining[0].id == 99
