"""Test preprocessors, registered under the entry point group ``aihub.preprocessors``."""

from __future__ import annotations

import pandas as pd


class LoadTimesTemperature:
    """The guide's CustomPipeline example (``load * temperature``) made leakage-safe: the
    load a day before the target hour times the target hour's temperature (a forecast,
    known ahead), so its output is usable up to 24 h ahead."""

    inputs = ("load", "temperature")
    outputs = ("load_times_temperature",)
    safe_horizon_hours = 24

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        keys = ["series_id", "timestamp"] if "series_id" in frame.columns else ["timestamp"]
        earlier = frame[[*keys, "load"]].assign(timestamp=frame["timestamp"] + pd.Timedelta(hours=24))
        merged = frame[keys].merge(earlier, on=keys, how="left")
        frame["load_times_temperature"] = merged["load"].to_numpy() * frame["temperature"].to_numpy()
        return frame


class AlwaysFails:
    """A preprocessor whose code raises: the job must fail cleanly, naming it."""

    inputs = ("load",)
    outputs = ("never_made",)
    safe_horizon_hours = 168

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        raise RuntimeError("this preprocessor always fails")
