"""(m) A rolling update under load against the same load on one replica left alone.

The simulated Kubernetes rolling update of ``tests/test_pod_lifecycle.py`` (two demo
processes on one SQLite database behind a load balancer that follows readiness; the old
pod gets SIGTERM while its removal from the endpoints arrives a second later), with 4
clients posting notes, one connection per request. The baseline is the same clients
through the same balancer for the same time, on one replica that is never restarted:
what the update costs the requests is the difference. Information only (issue 12 asks
for the figures, with no target).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Final

import trio

from benchmarks._common import Config, Reporter, median, ratio

TESTS: Final = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from test_pod_lifecycle import Rollout, rolling_update, steady_load  # noqa: E402


def _report(r: Reporter, name: str, runs: list[Rollout]) -> None:
    sent = sum(run.load.sent for run in runs)
    acked = sum(len(run.load.acked) for run in runs)
    lost = sum(sum(run.stored.get(k) != v for k, v in run.load.acked.items()) for run in runs)
    r.metric(f"pods_{name}_requests", sent, "count", digits=0)
    r.metric(f"pods_{name}_success_rate", 100 * ratio(acked, sent), "percent", digits=3)
    r.metric(f"pods_{name}_acknowledged_lost", lost, "count", digits=0)
    for label, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        value = median([run.percentile(fraction) for run in runs])
        r.metric(f"pods_{name}_latency_{label}_ms_median", value * 1000, "ms")


def run(config: Config, reporter: Reporter) -> None:
    r = reporter
    reps, through_each = (1, 20) if config.reps < 3 else (5, 300)
    r.comment(
        f"(m) rolling update under load ({through_each}+ requests through each pod) vs the"
        f" same load on one replica, {reps} runs each"
    )
    updates: list[Rollout] = []
    steady: list[Rollout] = []
    for _ in range(reps):  # interleaved, so that a slow moment hits both
        with tempfile.TemporaryDirectory(prefix="bench-pods-") as name:
            update = trio.run(rolling_update, Path(name), through_each)
            updates.append(update)
            steady.append(trio.run(steady_load, Path(name), update.seconds))
    _report(r, "rolling_update", updates)
    _report(r, "single_replica", steady)
    r.metric(
        "pods_old_pod_gone_after_sigterm_s_median",
        median([update.old_gone_after for update in updates]),
        "s",
    )
    r.metric("pods_grace_period_s", updates[0].grace, "s", digits=0)
    for label in ("p50", "p99"):
        r.metric(
            f"pods_latency_{label}_ratio_median",
            ratio(
                r.values[f"pods_rolling_update_latency_{label}_ms_median"],
                r.values[f"pods_single_replica_latency_{label}_ms_median"],
            ),
            "x",
        )
