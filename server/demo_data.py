"""Demo data for the guide's quick start: hourly load, temperature and humidity.

A synthetic but realistic utility feeder: daily and weekly load cycles, heating load
below 15 °C and cooling load above 22 °C, public holidays that look like Sundays,
persistent (AR(1)) weather and load noise. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TENANT = "acme-corp"
TABLE = "load_forecasting"
START = "2023-01-01 00:00"
END = "2025-12-31 23:00"

# Fixed-date and a few moving public holidays (days the load looks like a Sunday).
_HOLIDAYS = [
    "2023-01-01",
    "2023-04-07",
    "2023-04-10",
    "2023-05-01",
    "2023-05-29",
    "2023-12-25",
    "2023-12-26",
    "2024-01-01",
    "2024-03-29",
    "2024-04-01",
    "2024-05-01",
    "2024-05-27",
    "2024-12-25",
    "2024-12-26",
    "2025-01-01",
    "2025-04-18",
    "2025-04-21",
    "2025-05-01",
    "2025-05-26",
    "2025-12-25",
    "2025-12-26",
]


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    shocks = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + shocks[i]
        out[i] = acc
    return out


def generate(start: str = START, end: str = END, *, seed: int = 7, freq: str = "h") -> pd.DataFrame:
    """A frame with timestamp (UTC), load (MW), temperature (°C) and humidity (%)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, end, freq=freq, tz="UTC")
    n = len(ts)
    hours = ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0
    doy = ts.day_of_year.to_numpy()
    dow = ts.day_of_week.to_numpy()

    seasonal = 11.0 - 10.0 * np.cos(2 * np.pi * (doy - 15) / 365.25)
    daily = 4.0 * np.sin(2 * np.pi * (hours - 9) / 24)
    temperature = seasonal + daily + _ar1(rng, n, 0.97, 0.6)
    humidity = np.clip(70 - 1.2 * (temperature - 10) + _ar1(rng, n, 0.95, 1.5) + 10 * np.cos(2 * np.pi * hours / 24), 15, 100)

    holiday = np.isin(ts.normalize().tz_localize(None).strftime("%Y-%m-%d"), _HOLIDAYS)
    off_day = (dow >= 5) | holiday
    # Daily shape: night trough, morning ramp, evening peak; flatter and lower on days off.
    work_shape = (
        0.75 + 0.2 * np.exp(-((hours - 9.5) ** 2) / 8) + 0.3 * np.exp(-((hours - 18.5) ** 2) / 6) + 0.15 * ((hours > 7) & (hours < 19))
    )
    off_shape = 0.72 + 0.12 * np.exp(-((hours - 12) ** 2) / 18) + 0.22 * np.exp(-((hours - 19) ** 2) / 6)
    shape = np.where(off_day, off_shape, work_shape) * np.where(dow == 5, 1.03, 1.0)
    heating = 2.6 * np.clip(15.0 - temperature, 0, None)
    cooling = 3.4 * np.clip(temperature - 22.0, 0, None) ** 1.2
    growth = 1.0 + 0.02 * (np.arange(n) / (24 * 365.25))  # 2 % a year
    load = (100.0 * shape + heating + cooling) * growth + _ar1(rng, n, 0.9, 1.8)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "load": np.round(load, 3),
            "temperature": np.round(temperature, 2),
            "humidity": np.round(humidity, 1),
        }
    )
