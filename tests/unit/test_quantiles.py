"""Issue 25 item 2: quantile forecasts by split conformal prediction on the tune part:
calibrated on generated data (the 80 % interval covers close to 80 % of validation hours, 1 h
and 24 h ahead), scored by pinball loss, kept beside the model and reproduced by a forecast
from the saved version."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from server import demo_data
from tests.conftest import QUICK_START_CONFIG
from trainers import algorithms, forecasting, intervals, pipeline, predictions
from trainers import spec as specs
from trainers.errors import ConfigValidationError
from trainers.local import FolderRegistry, FrameSource, MemoryReporter

DAY_AHEAD = {
    **QUICK_START_CONFIG,
    "hyperparameters": {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31},
    "training_start": "2023-01-01T00:00:00",
    "training_end": "2024-06-30T23:00:00",
    "features": ["temperature", "hour_of_day", "day_of_week", "load_lag_24", "load_lag_168"],
    "forecast_horizon_hours": 24,
    "known_ahead": ["temperature"],
    "quantiles": [0.1, 0.5, 0.9],
}


@pytest.fixture(scope="module")
def frame():
    # The demo feeder to mid-2025 (its noise depends on the length generated); the jobs train on
    # 2023-01 .. 2024-06 and validate on its last 20 %. Other windows cover 75-84 % (issue 25's note).
    return demo_data.generate("2023-01-01 00:00", "2025-06-30 23:00")


@pytest.mark.parametrize("horizon", [1, 24])
def test_the_80_percent_interval_covers_about_80_percent(frame, horizon, tmp_path):
    features = DAY_AHEAD["features"] if horizon == 24 else [*DAY_AHEAD["features"], "load_lag_1"]
    spec = specs.build({**DAY_AHEAD, "forecast_horizon_hours": horizon, "features": features})
    result = pipeline.run(spec, data=FrameSource(frame), reporter=MemoryReporter(), registry=FolderRegistry(tmp_path))
    m = result.metrics
    assert 0.77 <= m["interval_coverage"] <= 0.83, m["interval_coverage"]
    assert m["pinball_loss"] == pytest.approx(np.mean([m["pinball_loss_q10"], m["pinball_loss_q50"], m["pinball_loss_q90"]]))
    assert m["interval_width"] > 0 and m["pinball_skill"] > 0  # better than the seasonal-naive forecast's quantiles
    kept = predictions.read(result.artifact.parent / predictions.FILE_NAME).frame
    assert (kept["q0.1"] <= kept["q0.5"]).all() and (kept["q0.5"] <= kept["q0.9"]).all()  # the levels never cross
    shift = intervals.read(result.artifact.parent)
    assert set(shift) == {0.1, 0.5, 0.9} and shift[0.1] < 0 < shift[0.9]
    if horizon == 24:  # a forecast from the saved version gives the same quantiles as validation kept
        model = algorithms.get("lgbm").load(result.artifact, algorithms.REGRESSION)
        origin = kept["timestamp"].iloc[100] - pd.Timedelta(hours=1)
        got = forecasting.forecast(model, spec, frame, origin, 24, quantiles=shift)
        mine = kept.set_index("timestamp").loc[got["timestamp"]]
        for level in ("q0.1", "q0.9"):
            assert got[level].to_numpy() == pytest.approx(mine[level].to_numpy(), rel=1e-9)


def test_levels_are_checked():
    def refused(config):
        with pytest.raises(ConfigValidationError) as err:
            specs.build(config)
        return {v.field: v.description for v in err.value.violations}

    assert "between 0 and 1" in refused({**DAY_AHEAD, "quantiles": [0.1, 1.5]})["quantiles"]
    assert "twice" in refused({**DAY_AHEAD, "quantiles": [0.1, 0.1]})["quantiles"]
    assert "forecasting only" in refused({**DAY_AHEAD, "model_type": "anomaly", "algorithm": "isolation_forest",
                                          "forecast_horizon_hours": 1, "known_ahead": None})["quantiles"]  # fmt: skip
    assert specs.build({**DAY_AHEAD, "quantiles": [0.9, 0.1]}).quantiles == (0.1, 0.9)
    plain = {k: v for k, v in DAY_AHEAD.items() if k != "quantiles"}
    assert "quantiles" not in specs.build(plain).to_dict()  # a config without them keeps its form and hash
    assert json.loads(json.dumps(specs.build(DAY_AHEAD).to_dict()))["quantiles"] == [0.1, 0.5, 0.9]
