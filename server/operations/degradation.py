"""Degradation checks: a schedule with action EVALUATE (or TRAIN_AND_EVALUATE) queues a check
at each firing; any server runs it (server/operations/tasks.py). The version the schedule's
alias points at (without an alias, the tenant's newest live one of the model type) is scored
on the window that ends at the firing, exactly as EvaluateModelVersion would, and compared
with its own training metrics:

- degraded when MAE > (1 + max_mae_increase) x training MAE (default 0.2: 20 % worse), or
- skill < training skill - max_skill_drop (default 0.1), where skill is known.

The result is stored with the check (GetSchedule shows the recent ones); a degraded check
alerts the tenant's targets (event ``degradation``) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_MAE_INCREASE = 0.2
DEFAULT_SKILL_DROP = 0.1


def judge(policy: Mapping[str, Any], metrics: Mapping[str, float], baseline: Mapping[str, float]) -> tuple[bool, str]:
    """Whether ``metrics`` crossed the policy's thresholds against ``baseline``, and why."""
    mae_increase = float(policy.get("max_mae_increase", DEFAULT_MAE_INCREASE))
    skill_drop = float(policy.get("max_skill_drop", DEFAULT_SKILL_DROP))
    found = []
    if "mae" in metrics and baseline.get("mae"):
        limit = baseline["mae"] * (1 + mae_increase)
        if metrics["mae"] > limit:
            found.append(f"MAE {metrics['mae']:.4g} is above {limit:.4g} (training MAE {baseline['mae']:.4g} + {mae_increase:.0%})")
    if "skill" in metrics and "skill" in baseline:
        floor = baseline["skill"] - skill_drop
        if metrics["skill"] < floor:
            found.append(f"skill {metrics['skill']:.3f} is below {floor:.3f} (training skill {baseline['skill']:.3f} - {skill_drop:g})")
    if found:
        return True, "; ".join(found)
    return False, f"within thresholds (MAE {metrics.get('mae', float('nan')):.4g} vs training {baseline.get('mae', float('nan')):.4g})"
