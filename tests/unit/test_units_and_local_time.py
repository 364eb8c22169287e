"""Issue 25 item 4: degree-hour bases read in a declared temperature unit, calendar features
on a local clock (DST included), holidays in the config's zone unless they name their own."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import QUICK_START_CONFIG
from trainers import features
from trainers import spec as specs
from trainers.errors import ConfigValidationError

US = {**QUICK_START_CONFIG, "features": ["temperature", "temperature_hdh_65", "temperature_cdh_75", "hour_of_day", "load_lag_24"]}


def refused(config: dict) -> dict[str, str]:
    with pytest.raises(ConfigValidationError) as err:
        specs.build(config)
    return {v.field: v.description for v in err.value.violations}


def test_a_fahrenheit_base_needs_the_unit_declared_and_then_works():
    said = refused(US)
    assert "0 to 40 °C" in said["features[1]"] and '"units": {"temperature": "F"}' in said["features[1]"]
    spec = specs.build({**US, "units": {"temperature": "f"}})
    assert spec.units == {"temperature": "F"} and spec.to_dict()["units"] == {"temperature": "F"}
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC"), "temperature": [50.0, 65.0, 80.0]})
    assert features.feature(frame, spec, "temperature_hdh_65", 1, spec.known()).tolist() == [15.0, 0.0, 0.0]
    assert features.feature(frame, spec, "temperature_cdh_75", 1, spec.known()).tolist() == [0.0, 0.0, 5.0]
    assert "32 to 104 °F" in refused({**US, "features": ["temperature_hdh_20"], "units": {"temperature": "F"}})["features[0]"]
    assert "C or F" in refused({**US, "units": {"temperature": "K"}})["units"]
    assert "no feature reads humidity" in refused({**US, "units": {"temperature": "F", "humidity": "F"}})["units.humidity"]
    # Without units the config, its canonical form and its hash are what they were.
    plain = specs.build(QUICK_START_CONFIG)
    assert "units" not in plain.to_dict() and "timezone" not in plain.to_dict()


def test_calendar_features_follow_the_local_clock_across_dst():
    spec = specs.build({**QUICK_START_CONFIG, "timezone": "Europe/Berlin"})
    # 2024-03-31: Berlin's clocks go from 02:00 to 03:00 (01:00 UTC).
    ts = pd.Series(pd.date_range("2024-03-30T22:00", periods=5, freq="h", tz="UTC"))
    local = features.calendar(ts, "hour_of_day", spec.timezone).tolist()
    assert local == [23.0, 0.0, 1.0, 3.0, 4.0]  # 02:00 never happens there
    assert features.calendar(ts, "hour_of_day").tolist() == [22.0, 23.0, 0.0, 1.0, 2.0]  # UTC, as before
    assert features.calendar(ts, "day_of_week", spec.timezone).tolist()[1] == 6.0  # already Sunday in Berlin
    naive = pd.Series(pd.date_range("2024-07-01T10:00", periods=1, freq="h"))  # no offset: UTC
    assert features.calendar(naive, "hour_of_day", "Europe/Berlin").tolist() == [12.0]
    assert "IANA" in refused({**QUICK_START_CONFIG, "timezone": "Mars/Olympus"})["timezone"]


def test_holidays_take_the_configs_zone_unless_they_name_their_own():
    base = {**QUICK_START_CONFIG, "features": [*QUICK_START_CONFIG["features"], "is_holiday"], "timezone": "America/Chicago"}
    inherited = specs.build({**base, "holidays": {"country": "US"}})
    assert inherited.holidays.timezone == "America/Chicago"
    again = specs.TrainingSpec.from_dict(inherited.to_dict(), model_type="forecast")  # stored and read back: the same
    assert again == inherited and again.config_hash == inherited.config_hash
    own = specs.build({**base, "holidays": {"country": "US", "timezone": "America/New_York"}})
    assert own.holidays.timezone == "America/New_York"
