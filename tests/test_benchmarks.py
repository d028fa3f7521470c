"""The benchmarks run end to end with tiny sizes and print parseable lines.

No timing is asserted here: only that every benchmark runs and reports ``name value unit``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmarks(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def parse(output: str) -> dict[str, tuple[float, str]]:
    """The ``name value unit`` lines of ``output``; ``#`` lines are comments."""
    metrics: dict[str, tuple[float, str]] = {}
    for line in output.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(" ")
        assert len(parts) == 3, f"not 'name value unit': {line!r}"
        name, value, unit = parts
        assert name, line
        assert unit, line
        assert name not in metrics, f"metric printed twice: {name}"
        metrics[name] = (float(value), unit)
    return metrics


def test_quick_run_prints_every_benchmark() -> None:
    metrics = parse(run_benchmarks("-m", "benchmarks", "--quick"))
    # --quick sizes: 10 children for start/stop, 10 and 20 for memory, 40 for scaling;
    # 3 + 3 clients at the SIGTERM of the HTTP benchmark.
    expected = [
        "start_10_supervise_per_child_us_median",
        "start_10_bare_per_child_us_median",
        "start_10_ratio_median",
        "stop_10_supervise_per_child_us_median",
        "stop_10_bare_ordered_per_child_us_median",
        "stop_10_bare_nursery_cancel_per_child_us_median",
        "stop_10_ratio_vs_ordered_median",
        "stop_10_ratio_vs_nursery_cancel_median",
        "restart_supervise_per_restart_us_median",
        "restart_bare_per_restart_us_median",
        "restart_ratio_median",
        "memory_10_supervise_per_child_bytes_median",
        "memory_10_bare_per_child_bytes_median",
        "memory_10_ratio_median",
        "memory_20_ratio_median",
        "start_40_ratio_median",
        "stop_40_ratio_vs_ordered_median",
        "memory_40_ratio_median",
        "scaling_start_40_vs_10_supervise_median",
        "scaling_stop_40_vs_10_supervise_median",
        "shutdown_hooks_5x20_ratio_median",
        "shutdown_step_100_ratio_vs_ordered_median",
        "http_rps_supervise_median",
        "http_rps_bare_median",
        "http_rps_ratio_median",
        "http_time_per_request_ratio_median",
        "http_ready_rps_supervise_median",
        "sigterm_to_exit_supervise_ms_median",
        "sigterm_to_exit_idle_ms_median",
        "sigterm_to_exit_bare_ms_median",
        "sigterm_to_exit_ratio_vs_idle_median",
        "sigterm_to_exit_ratio_vs_bare_median",
        "sigterm_in_process_supervise_ms_median",
        "sigterm_in_process_bare_ms_median",
        # core: the targets of issue 9, at 10 and 40 children in --quick
        "core_start_10_ratio_median",
        "core_start_10_floor_scoped_per_child_us_median",
        "core_stop_10_ratio_median",
        "core_stop_10_concurrent_stop_ratio_median",
        "core_stop_10_floor_at_once_per_child_us_median",
        "core_start_child_10_supervise_per_call_us_median",
        "core_terminate_child_10_supervise_per_call_us_median",
        "core_scaling_start_40_vs_10_supervise_over_bare_median",
        "core_scaling_start_child_40_vs_10_supervise_median",
        "core_memory_10_ratio_median",
        # process: 5 programs in --quick, the floor and trio_supervise only
        "process_crash_to_running_ratio_median",
        "process_start_5_ratio_median",
        "process_sigterm_5_ratio_median",
        "process_sigterm_ignored_5_ratio_median",
        # singleton handovers (PostgreSQL and etcd are started by the benchmark) and pods
        "singleton_postgres_graceful_handover_ms_median",
        "singleton_postgres_sigkill_ratio_median",
        "singleton_file_graceful_handover_ms_median",
        "singleton_etcd_sigkill_handover_ms_median",
        "pods_rolling_update_success_rate",
        "pods_single_replica_latency_p99_ms_median",
        "pods_latency_p99_ratio_median",
        # the observer's page in Chromium (.ci/install-chromium), 100 children in --quick
        "observer_100_first_render_ms_median",
        "observer_100_snapshot_render_ms_median",
        "observer_100_update_ms_median",
        "observer_100_first_render_ratio_to_fetch_median",
    ]
    for name in expected:
        assert name in metrics, f"missing {name}"
        value, _ = metrics[name]
        assert math.isfinite(value), (name, value)
        assert value > 0, (name, value)
    ratios = {name: unit for name, (_, unit) in metrics.items() if name.endswith("_median")}
    assert {unit for name, unit in ratios.items() if "ratio" in name} == {"x"}
    verdicts = [value for name, (value, _) in metrics.items() if name.startswith("target_met_")]
    # 12 for the earlier benchmarks; core: 5 per size, 3 growths, memory; process: 6;
    # multi-core: 1, where wrk is installed (.ci/install-wrk).
    has_wrk = shutil.which("wrk") is not None
    assert len(verdicts) == 12 + 5 * 2 + 3 + 1 + 6 + has_wrk
    if has_wrk:
        assert metrics["multicore_cpu_workers_2_rps_median"][0] > 0
    assert set(verdicts) <= {0.0, 1.0}
    met, missed = metrics["targets_met"][0], metrics["targets_missed"][0]
    assert met + missed == len(verdicts)
    assert missed == verdicts.count(0.0)


@pytest.mark.parametrize(
    "command",
    [
        ("benchmarks/run.py", "--quick", "--only", "restart"),
        ("-m", "benchmarks", "--quick", "--only", "scaling", "--reps", "1"),
    ],
)
def test_entry_points_and_selection(command: tuple[str, ...]) -> None:
    metrics = parse(run_benchmarks(*command))
    assert metrics
    if "restart" in command:
        assert "restart_ratio_median" in metrics
        assert not any(name.startswith(("start_", "memory_")) for name in metrics)
    else:
        assert "scaling_start_40_vs_10_supervise_median" in metrics
        assert "restart_ratio_median" not in metrics


def test_process_benchmark_quick() -> None:
    """``--only process --quick``: the floor and trio_supervise columns of every metric."""
    metrics = parse(run_benchmarks("-m", "benchmarks", "--quick", "--only", "process"))
    assert not any(name.startswith(("start_", "core_", "http_")) for name in metrics)
    # --quick: 5 programs (10 with their grandchildren), no peers.
    for who in ("floor", "supervise"):
        for name in (
            f"process_crash_to_running_{who}_ms_median",
            f"process_start_5_{who}_ms_median",
            f"process_sigterm_5_{who}_ms_median",
            f"process_sigterm_ignored_5_{who}_ms_median",
            f"process_uss_5_{who}_MiB_median",
        ):
            value, unit = metrics[name]
            assert math.isfinite(value), name
            assert value > 0, name
            assert unit in ("ms", "MiB"), name
        survivors, _ = metrics[f"process_survivors_10_{who}_count_median"]
        assert 0 <= survivors <= 10
        cpu, unit = metrics[f"process_idle_cpu_5_{who}_percent_median"]
        assert unit == "percent"
        assert 0 <= cpu <= 200
        # Nothing of a supervisor outlives its graceful stop.
        assert metrics[f"process_left_after_sigterm_{who}_count"] == (0.0, "count")
    assert not any("supervisord" in name or "circus" in name for name in metrics)
    for stage in ("python", "trio", "trio_supervise", "tree0"):
        assert metrics[f"process_uss_stage_{stage}_MiB_median"][0] > 0
        assert metrics[f"process_launch_stage_{stage}_ms_median"][0] > 0
    assert metrics["process_uss_5_guardian_MiB_median"][0] > 0
    for name in (
        "process_crash_to_running_ratio_median",
        "process_start_5_ratio_median",
        "process_start_5_less_imports_ratio_median",
        "process_sigterm_5_ratio_median",
        "process_sigterm_ignored_5_ratio_median",
    ):
        assert metrics[name][1] == "x"
    verdicts = [value for name, (value, _) in metrics.items() if name.startswith("target_met_")]
    assert len(verdicts) == 6
    assert set(verdicts) <= {0.0, 1.0}
