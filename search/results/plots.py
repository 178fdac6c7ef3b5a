"""Plots of a study's trials: pairwise 2-D scatters of every feasible trial with the
Pareto front highlighted (and the knee marked), a 3-D scatter of the first three
objectives, and the hypervolume over trials.

`plot(report, path)` picks the backend from the suffix: `.html` → plotly (one
self-contained, interactive file), `.png`/`.svg`/`.pdf` → matplotlib (Agg), the same
panels in one figure. Objectives spanning more than 30× (all positive) get a log axis.
The knee is a filled amber star with a black edge in both (an open symbol in plotly
takes the marker colour for its outline, so a transparent one vanishes). Front trial
numbers in the PNG sit beside their marker, each where it overlaps no other label and
no marker (`_place_labels`).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from search.core.errors import UsageError
from search.results.pareto import FrontReport

MATPLOTLIB_SUFFIXES = (".png", ".svg", ".pdf")
LOG_SPAN = 30.0
FRONT_COLOR, TRIAL_COLOR, INFEASIBLE_COLOR, KNEE_COLOR = "#d62728", "#7f9fbf", "#bbbbbb", "#ffb000"
BASELINE_COLOR = "#111111"  # the study's baseline (search.tasks.baseline): a black square
EDGE_COLOR = "#111111"


def _columns(trials, n: int) -> np.ndarray:
    return np.array([t.values for t in trials], dtype=float) if trials else np.empty((0, n))


def _log_axis(column: np.ndarray) -> bool:
    column = column[np.isfinite(column)]
    return len(column) > 1 and column.min() > 0 and column.max() / column.min() > LOG_SPAN


def _label(name: str, direction: str) -> str:
    return f"{name} ({'↑' if direction == 'maximize' else '↓'} better)"


def _infeasible(report: FrontReport) -> list:
    feasible = {t.number for t in report.feasible}
    return [
        t for t in report.trials
        if t.number not in feasible and t.state.name == "COMPLETE" and t.values is not None
        and all(math.isfinite(v) for v in t.values)
    ]


def check_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".html", *MATPLOTLIB_SUFFIXES):
        raise UsageError(f"--plot {path}: use a .html (interactive) or .png/.svg/.pdf file")
    if path.parent != Path("") and not path.parent.is_dir():
        raise UsageError(f"--plot {path}: directory {path.parent} does not exist")
    return path


def plot(report: FrontReport, path: str | Path, title: str | None = None) -> Path:
    path = check_path(path)
    if not report.feasible:
        raise UsageError("--plot: the study has no feasible COMPLETE trial to plot yet")
    if path.suffix.lower() == ".html":
        _plotly(report, path, title)
    else:
        _matplotlib(report, path, title)
    return path


def _pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def _matplotlib(report: FrontReport, path: Path, title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    obj = report.objectives
    n = len(obj.names)
    pairs = _pairs(n)
    panels = len(pairs) + (1 if n >= 3 else 0) + 1
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = plt.figure(figsize=(5.2 * cols, 4.4 * rows + 0.6), layout="constrained")
    feasible = _columns(report.feasible, n)
    front = _columns(report.front, n)
    infeasible = _columns(_infeasible(report), n)
    knee = report.knee
    k = np.array(knee.values, dtype=float) if knee is not None else None
    logs = [_log_axis(np.concatenate([feasible[:, i], infeasible[:, i]])) for i in range(n)]

    index = 1
    placements = []  # (axes, labels, x, y): placed once the layout is final
    for i, j in pairs:
        ax = fig.add_subplot(rows, cols, index)
        index += 1
        if len(infeasible):
            ax.scatter(infeasible[:, i], infeasible[:, j], marker="x", s=22, c=INFEASIBLE_COLOR, label="infeasible")
        ax.scatter(feasible[:, i], feasible[:, j], s=22, c=TRIAL_COLOR, alpha=0.8, label="feasible trial")
        markers = [ax.scatter(front[:, i], front[:, j], s=46, c=FRONT_COLOR, edgecolors=EDGE_COLOR, linewidths=0.5,
                              label="Pareto front", zorder=3)]
        if k is not None:
            markers.append(ax.scatter([k[i]], [k[j]], marker="*", s=320, c=KNEE_COLOR, edgecolors=EDGE_COLOR,
                                      linewidths=1.0, label=f"knee (trial {knee.number})", zorder=4))
        if report.baseline is not None:
            b = report.baseline.values
            markers.append(ax.scatter([b[i]], [b[j]], marker="s", s=70, facecolors="none", edgecolors=BASELINE_COLOR,
                                      linewidths=1.6, label=f"baseline (trial {report.baseline.number})", zorder=5))
        ax.set_xlabel(_label(obj.names[i], obj.directions[i]))
        ax.set_ylabel(_label(obj.names[j], obj.directions[j]))
        if logs[i]:
            ax.set_xscale("log")
        if logs[j]:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        labels: dict[tuple[float, float], list[str]] = {}
        for trial, point in zip(report.front, front):  # trials with equal values share one label
            labels.setdefault((point[i], point[j]), []).append(str(trial.number))
        placements.append((ax, labels, markers))
    if n >= 3:
        ax = fig.add_subplot(rows, cols, index, projection="3d")
        index += 1
        # 3-D scatters ignore zorder: a point is drawn once, in its top group, or the
        # knee's own front and trial markers would cover its star.
        on_front = {t.number for t in report.front}
        rest = _columns([t for t in report.feasible if t.number not in on_front], n)
        ax.scatter(rest[:, 0], rest[:, 1], rest[:, 2], s=16, c=TRIAL_COLOR, alpha=0.7)
        others = np.array([t.number != knee.number for t in report.front]) if knee is not None else np.ones(len(front), bool)
        ax.scatter(front[others, 0], front[others, 1], front[others, 2], s=40, c=FRONT_COLOR, edgecolors=EDGE_COLOR,
                   linewidths=0.5)
        if k is not None:
            ax.scatter([k[0]], [k[1]], [k[2]], marker="*", s=260, c=KNEE_COLOR, edgecolors=EDGE_COLOR, linewidths=1.0,
                       depthshade=False)
        ax.set_xlabel(obj.names[0], fontsize=8)
        ax.set_ylabel(obj.names[1], fontsize=8)
        ax.set_zlabel(obj.names[2], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title("first three objectives", fontsize=9)
    ax = fig.add_subplot(rows, cols, index)
    history = report.history()
    if history:
        numbers, volumes = zip(*history)
        ax.step(numbers, volumes, where="post", color=FRONT_COLOR)
        ax.scatter(numbers, volumes, s=10, color=FRONT_COLOR)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume")
    ax.set_title("hypervolume over trials\nreference point " + _reference_text(report), fontsize=8)
    ax.grid(alpha=0.3)
    # One legend for every panel, below them: inside a panel it would hide points.
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(names), fontsize=8, frameon=False)
    fig.suptitle(title or _title(report), fontsize=11)
    fig.canvas.draw()  # fixes the constrained layout: adjustText works in display coordinates
    for ax, labels, markers in placements:
        _place_labels(ax, labels, markers)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _marker_boxes(collection) -> list:
    """Display-space boxes of a scatter's markers, at the size they are drawn."""
    from matplotlib.transforms import Bbox

    radius = math.sqrt(float(np.max(collection.get_sizes()))) / 2 * collection.figure.dpi / 72  # points² → pixels
    centres = collection.get_offset_transform().transform(collection.get_offsets())
    return [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centres]


# Where a label may sit, as a direction from its marker: right, left, above, below, diagonals.
_DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]


def _place_labels(ax, labels: dict[tuple[float, float], list[str]], markers: list) -> None:
    """Write each label beside its point, in the first direction where it overlaps no
    label placed before it and no marker (at its drawn size) and stays inside the axes;
    where no direction is free, in the one with the fewest overlaps. Call once the layout
    is final: it works in display coordinates."""
    renderer = ax.figure.canvas.get_renderer()
    obstacles = [b for m in markers for b in _marker_boxes(m)]
    inside = ax.get_window_extent(renderer)
    for (x, y), numbers in sorted(labels.items()):
        # Points from the point's centre: clear of the largest marker drawn on it (the knee's star).
        gap = 3.0 + max((math.sqrt(float(np.max(m.get_sizes()))) / 2 for m in markers
                         if np.any(np.all(np.isclose(m.get_offsets(), (x, y)), axis=1))), default=4.0)
        best = None
        for dx, dy in _DIRECTIONS:
            text = ax.annotate(", ".join(numbers), (x, y), xytext=(dx * gap, dy * gap), textcoords="offset points",
                               fontsize=7, zorder=5, ha={1: "left", -1: "right", 0: "center"}[dx],
                               va={1: "bottom", -1: "top", 0: "center"}[dy])
            box = text.get_window_extent(renderer)
            clashes = sum(box.overlaps(o) for o in obstacles) + (0 if inside.contains(box.x0, box.y0)
                                                                   and inside.contains(box.x1, box.y1) else 10)
            if best is None or clashes < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clashes, text, box)
            else:
                text.remove()
            if clashes == 0:
                break
        obstacles.append(best[2])


def _reference_text(report: FrontReport) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in zip(report.objectives.names, report.reference))


def _title(report: FrontReport) -> str:
    return (
        f"{len(report.front)} on the Pareto front of {len(report.feasible)} feasible trials "
        f"({len(report.trials)} in all); hypervolume {report.hypervolume:.4g}"
    )


def _hover(trial, names, describe=None) -> str:
    """A trial's values and, in the registry's words, its config (a table study: its params)."""
    params = trial.params
    lines = [f"trial {trial.number}"] + [f"{n}={v:.4g}" for n, v in zip(names, trial.values)]
    words = describe(params) if describe is not None else {k: str(v) for k, v in params.items()}
    lines.append("/".join(w for w in words.values() if w))
    if "size_kb" in trial.user_attrs:
        lines.append(f"size_kb={trial.user_attrs['size_kb']:.4g}")
    return "<br>".join(lines)


def _plotly(report: FrontReport, path: Path, title: str | None) -> None:
    plotly_figure(report, title).write_html(path, include_plotlyjs=True, full_html=True)


def plotly_figure(report: FrontReport, title: str | None = None):
    """The interactive figure `--plot FILE.html` writes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    obj = report.objectives
    n = len(obj.names)
    pairs = _pairs(n)
    cells = [("xy", p) for p in pairs] + ([("scene", None)] if n >= 3 else []) + [("xy", "hv")]
    cols = min(3, len(cells))
    rows = math.ceil(len(cells) / cols)
    specs = [[None] * cols for _ in range(rows)]
    titles = []
    for index, (kind, what) in enumerate(cells):
        specs[index // cols][index % cols] = {"type": kind}
        titles.append(
            f"{obj.names[what[1]]} vs {obj.names[what[0]]}" if isinstance(what, tuple)
            else "first three objectives" if kind == "scene"
            else f"hypervolume over trials<br><sup>reference point {_reference_text(report)}</sup>"
        )
    # Room between rows for a row's x-axis titles and the next row's panel titles.
    fig = make_subplots(rows=rows, cols=cols, specs=specs, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.22 if rows > 1 else 0.1)
    on_front = {t.number for t in report.front}
    groups = [
        ("infeasible", _infeasible(report), dict(color=INFEASIBLE_COLOR, symbol="x", size=7)),
        ("feasible trial", [t for t in report.feasible if t.number not in on_front], dict(color=TRIAL_COLOR, size=7)),
        ("Pareto front", report.front, dict(color=FRONT_COLOR, size=10, line=dict(color=EDGE_COLOR, width=1))),
    ]
    knee = report.knee
    if knee is not None:
        groups.append((f"knee (trial {knee.number})", [knee],
                       dict(color=KNEE_COLOR, symbol="star", size=20, line=dict(color=EDGE_COLOR, width=1.5))))
    if report.baseline is not None:
        groups.append((f"baseline (trial {report.baseline.number})", [report.baseline],
                       dict(color="rgba(0,0,0,0)", symbol="square-open", size=16, line=dict(color=BASELINE_COLOR, width=2.5))))
    feasible = _columns(report.feasible, n)
    logs = [_log_axis(feasible[:, i]) for i in range(n)]
    for index, (kind, what) in enumerate(cells):
        row, col = index // cols + 1, index % cols + 1
        first = index == 0
        if kind == "xy" and isinstance(what, tuple):
            i, j = what
            for name, trials, marker in groups:
                if not trials:
                    continue
                values = _columns(trials, n)
                fig.add_trace(
                    go.Scatter(x=values[:, i], y=values[:, j], mode="markers", name=name, legendgroup=name,
                               showlegend=first, marker=marker, text=[_hover(t, obj.names, report.describe) for t in trials],
                               hoverinfo="text"),
                    row=row, col=col,
                )
            fig.update_xaxes(title_text=_label(obj.names[i], obj.directions[i]), type="log" if logs[i] else None, row=row, col=col)
            fig.update_yaxes(title_text=_label(obj.names[j], obj.directions[j]), type="log" if logs[j] else None, row=row, col=col)
        elif kind == "scene":
            for name, trials, marker in groups:
                if not trials:
                    continue
                values = _columns(trials, n)
                # 3-D markers know fewer symbols: the knee is a diamond there.
                symbol = {"star": "diamond"}.get(marker.get("symbol"), marker.get("symbol", "circle"))
                marker3d = {k: v for k, v in marker.items() if k != "symbol"} | {"size": max(3, marker["size"] // 2 - 2), "symbol": symbol}
                fig.add_trace(
                    go.Scatter3d(x=values[:, 0], y=values[:, 1], z=values[:, 2], mode="markers", name=name,
                                 legendgroup=name, showlegend=False, marker=marker3d,
                                 text=[_hover(t, obj.names, report.describe) for t in trials], hoverinfo="text"),
                    row=row, col=col,
                )
            scene = next(k for k in fig.layout if k.startswith("scene"))  # the only scene
            # Camera a little farther than plotly's default, so the axis titles stay inside the panel.
            fig.layout[scene].update(xaxis_title=obj.names[0], yaxis_title=obj.names[1], zaxis_title=obj.names[2],
                                     camera=dict(eye=dict(x=1.6, y=1.6, z=1.2)))
        else:
            history = report.history()
            if history:
                numbers, volumes = zip(*history)
                fig.add_trace(
                    go.Scatter(x=numbers, y=volumes, mode="lines+markers", line_shape="hv", name="hypervolume",
                               showlegend=False, line=dict(color=FRONT_COLOR)),
                    row=row, col=col,
                )
            fig.update_xaxes(title_text="trial number", row=row, col=col)
            fig.update_yaxes(title_text="hypervolume", row=row, col=col)
    fig.update_layout(
        title=dict(text=title or _title(report), x=0.5, xanchor="center"),
        height=440 * rows + 90, width=500 * cols, template="plotly_white",
        legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.06 if rows > 1 else -0.15, yanchor="top"),
        margin=dict(t=90, b=80),
    )
    return fig
