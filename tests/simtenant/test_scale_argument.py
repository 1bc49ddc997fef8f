"""The scale scenario's command-line argument: ``scale:DEPLOYMENTS[:DAYS]``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from devtools.simtenant.__main__ import scenario_from_arg


def spread(value: str) -> tuple[int, timedelta]:
    scenario = scenario_from_arg(value)
    times = [d.enrolled_at for d in scenario.devices]
    assert all(t <= scenario.start for t in times)
    return len(times), scenario.start - min(times)


def test_scale_spreads_its_deployments_over_seven_days_unless_told():
    count, oldest = spread("scale:400")
    assert count == 400
    assert timedelta(days=6) < oldest <= timedelta(days=7)


def test_scale_with_days_spreads_its_deployments_over_that_look_back():
    count, oldest = spread("scale:400:30")
    assert count == 400
    assert timedelta(days=29) < oldest <= timedelta(days=30)


def test_the_days_do_not_change_which_deployments_are_made():
    week, month = scenario_from_arg("scale:50"), scenario_from_arg("scale:50:30")
    assert [d.device_name for d in week.devices] == [d.device_name for d in month.devices]


@pytest.mark.parametrize("value", ["scale:100:0", "scale:100:31", "scale:100:x", "scale:-1"])
def test_a_scale_argument_out_of_range_is_refused(value):
    with pytest.raises(ValueError):
        scenario_from_arg(value)
