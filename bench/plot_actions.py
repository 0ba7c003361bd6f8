"""The action-mode bench as a PNG: success by family, steps and calls, tokens, wall time.

matplotlib is a bench-only tool, not a dependency of the package; the bench
checks for it before it spends hours on model calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_COLORS = {"code": "#2b7bba", "json": "#e07b39", "code-json": "#5aa469", "code-json-object": "#8e6bb8",
           "code-json-schema": "#c45a8a"}


class MissingMatplotlib(RuntimeError):
    pass


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        from bench.actions import BenchError

        raise BenchError("the chart needs matplotlib, which is not installed here: run "
                         "`pip install matplotlib` (a bench-only tool, not a dependency of "
                         "airflow-codeagent), or pass --no-chart") from exc


def _bars(ax: Any, groups: list[str], series: Mapping[str, list[float]], *, fmt: str,
          ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (mode, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [0 if math.isnan(v) else v for v in values]
        bars = ax.bar(xs, heights, width, label=mode, color=_COLORS.get(mode))
        for bar, v in zip(bars, values):
            if not math.isnan(v):
                ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def plot(summary: Mapping[str, Any], path: Path, *, title: str) -> Path:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in summary["modes"] if summary["per_mode"][m]["n"]]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    if not modes:
        fig.suptitle(f"{title}\n(no measured runs yet)")
    else:
        per_mode, per_family = summary["per_mode"], summary["per_family"]
        families = [f for f in summary["families"] if any(per_family[m][f][1] for m in modes)]
        groups = [*families, "all"]

        def rate(mode: str, family: str) -> float:
            ok, n = (per_mode[mode]["ok"], per_mode[mode]["n"]) if family == "all" else per_family[mode][family]
            return 100 * ok / n if n else math.nan

        sizes = [max(per_family[m][f][1] for m in modes) for f in families] + [max(per_mode[m]["n"] for m in modes)]
        labels = [f"{g}\n(n={n})" for g, n in zip(groups, sizes)]
        _bars(axes[0][0], labels, {m: [rate(m, g) for g in groups] for m in modes}, fmt="{:.0f}",
              ylabel="success rate (%)")
        axes[0][0].set_ylim(0, 110)
        axes[0][0].set_title("success by task family", fontsize=10)
        axes[0][0].legend(fontsize=8)

        _bars(axes[0][1], ["steps", "LLM calls", "tool calls"],
              {m: [per_mode[m]["steps"], per_mode[m]["llm_calls"], per_mode[m]["tool_calls"]] for m in modes},
              fmt="{:.1f}", ylabel="mean per task run")
        axes[0][1].set_title("steps and calls", fontsize=10)

        _bars(axes[1][0], ["input tokens", "output tokens"],
              {m: [per_mode[m]["input_tokens"] / 1000, per_mode[m]["output_tokens"] / 1000] for m in modes},
              fmt="{:.1f}k", ylabel="mean per task run (thousands)")
        axes[1][0].set_title("tokens", fontsize=10)

        _bars(axes[1][1], ["wall time"], {m: [per_mode[m]["wall_s"]] for m in modes}, fmt="{:.0f} s",
              ylabel="mean seconds per task run")
        counts = ", ".join(f"{m}: {per_mode[m]['ok']}/{per_mode[m]['n']}" for m in modes)
        axes[1][1].set_title(f"wall time (solved {counts})", fontsize=10)
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
