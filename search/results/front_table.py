"""The Pareto front as a terminal table: what `paretune front` and the end of
`paretune launch` print.

Rows are the front best first by the first objective; the knee (the default pick of
`paretune export`) is starred and bold, and the line under the table says which front
trials it was taken among (within `max_drop` of the baseline's accuracy, or without
a baseline of useful accuracy) and what it trades against the baseline (or the most
accurate front trial). The baseline is marked `b`, and listed last where it is not
on the front. On a terminal the table fits its width: when
the full table is wider, the per-dimension columns (model, pruning, quantization,
runtime) are first merged into one (`config`), then `size_kb` and then that column are left out, and a note
below the table says so; a word is never cut. Elsewhere (a pipe, a CI log) every
column is printed at its natural width.
"""

from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table

from search.results.pareto import FrontReport, trade_words

KNEE_MARK = "*"
BASELINE_MARK = "b"  # after the trial number: the study's baseline (search.tasks.baseline)
MERGED = "config"  # the per-dimension columns as one, when the table must be narrower


def _size(trial) -> str:
    size = trial.user_attrs.get("size_kb")
    return f"{size:.4g}" if isinstance(size, (int, float)) and not isinstance(size, bool) else ""


def _model_columns(report: FrontReport) -> list[str]:
    """One column per dimension with something to say about the front's trials (model,
    pruning, quantization, runtime: the registry's words); a study of a lookup table
    shows its params."""
    trials = report.front
    if report.describe is None:
        return sorted({k for t in trials for k in t.params})
    order: list[str] = []  # the registry's order: model, pruning, quantization, runtime, ...
    wanted: set[str] = set()
    for trial in trials:
        for column, words in report.describe(trial.params).items():
            if column not in order:
                order.append(column)
            if words and (words != "none" or column == "model"):
                wanted.add(column)
    return [column for column in order if column in wanted]


def _cell(report: FrontReport, trial, name: str) -> str:
    if report.describe is None:
        value = trial.params.get(name)
        return "" if value is None else str(value)
    return report.describe(trial.params).get(name, "")


def _layouts(report: FrontReport) -> list[tuple[list[str], str | None]]:
    """Column sets from the fullest to the narrowest, each with what it leaves out."""
    params = _model_columns(report)
    has_size = any(_size(t) for t in report.front)
    merged = "/".join(params)
    size = ["size_kb"] if has_size else []
    model = [MERGED] if len(params) > 1 else params
    layouts = [(size + params, None)]
    if len(params) > 1:
        layouts.append((size + model, f"{merged} shown as {MERGED}"))
    if has_size:
        layouts.append((model, "size_kb left out" + (f", {merged} shown as {MERGED}" if len(params) > 1 else "")))
    if params:
        layouts.append(([], f"size_kb and {merged} left out" if has_size else f"{merged} left out"))
    return layouts


def _rows(report: FrontReport, columns: list[str]) -> list[tuple[list[str], bool]]:
    """Each row's cells (trial, objectives, `columns`) and whether it is the knee."""
    knee = report.knee
    params = _model_columns(report)
    rows = report.rows()
    if report.baseline is not None and all(t.number != report.baseline.number for t in rows):
        rows = rows + [report.baseline]  # the baseline off the front: its row last, to compare with
    cells = []
    for trial in rows:
        extra = []
        for column in columns:
            if column == "size_kb":
                extra.append(_size(trial))
            elif column == MERGED:
                extra.append("/".join(_cell(report, trial, p) for p in params))
            else:
                extra.append(_cell(report, trial, column))
        is_knee = knee is not None and trial.number == knee.number
        is_baseline = report.baseline is not None and trial.number == report.baseline.number
        label = f"{trial.number}{KNEE_MARK if is_knee else ''}{BASELINE_MARK if is_baseline else ''}"
        cells.append(([label, *(f"{v:.4g}" for v in trial.values), *extra], is_knee))
    return cells


def build(report: FrontReport, columns: list[str]) -> Table:
    """The table with these extra columns (from `_layouts`) after trial and the objectives."""
    table = Table("trial", *report.objectives.names, *columns, box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True, show_edge=False)
    for column in table.columns:
        column.overflow = "fold"  # narrower than the narrowest layout: wrap, never "…"
    for cells, is_knee in _rows(report, columns):
        table.add_row(*cells, style="bold" if is_knee else None)
    return table


def markdown(report: FrontReport) -> str:
    """The full table (every column) in Markdown with the knee and baseline lines: the
    MLflow study run's front.md and the optuna-dashboard note."""
    if not report.front:
        return "no feasible COMPLETE trial yet: nothing on the front\n"
    columns = _layouts(report)[0][0]
    header = ["trial", *report.objectives.names, *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells, is_knee in _rows(report, columns):
        cells = [c.replace("|", "\\|").replace("*", "\\*") for c in cells]
        lines.append("| " + " | ".join(f"**{c}**" if is_knee and c else c for c in cells) + " |")
    lines += ["", knee_line(report).replace(KNEE_MARK, "\\" + KNEE_MARK, 1)]  # a line, not a list item
    line = baseline_line(report)
    if line:
        lines += ["", line]
    return "\n".join(lines) + "\n"


def fitted(report: FrontReport, width: int | None) -> tuple[Table, int, str | None]:
    """The fullest table whose natural width fits `width` (None: no limit), its width,
    and what had to go to fit."""
    measure = Console(width=10_000, file=io.StringIO())  # measures only: prints nothing
    choice = None
    for columns, note in _layouts(report):
        table = build(report, columns)
        natural = measure.measure(table).maximum
        choice = (table, natural, note)
        if width is None or natural <= width:
            return table, natural, note
    return choice


def print_front(console: Console, report: FrontReport) -> None:
    """The front table (knee starred) with its notes; nothing when the front is empty."""
    if not report.front:
        console.print("no feasible COMPLETE trial yet: nothing on the front", highlight=False)
        return
    width = console.width if console.is_terminal else None
    table, natural, note = fitted(report, width)
    if natural > console.width and not console.is_terminal:
        # Not a terminal: no width to fit, so no reason to wrap (Rich assumes 80 columns).
        Console(file=console.file, width=natural, color_system=None, highlight=False).print(table)
    else:
        console.print(table)
    console.print(knee_line(report), highlight=False, soft_wrap=not console.is_terminal)
    line = baseline_line(report)
    if line:
        console.print(line, highlight=False, soft_wrap=not console.is_terminal)
    if note:
        console.print(f"({note} to fit {console.width} columns; `paretune front --json` has every field)",
                      highlight=False, soft_wrap=not console.is_terminal)


def knee_line(report: FrontReport) -> str:
    """What the star means, which trials the knee was taken among, and what it trades."""
    choice = report.knee_choice()
    knee = choice.trial
    left_out = len(report.front) - len(choice.among)
    among = f"among the {len(choice.among)} front trials {choice.rule} ({left_out} left out)" if left_out else "on the front"
    trade = trade_words(report.front, knee, report.objectives, report.baseline)
    fallback = f" ({choice.fallback}: taken {choice.rule} instead)" if choice.fallback else ""
    return (f"{KNEE_MARK} knee (trial {knee.number}): nearest the ideal point {among}{fallback}; "
            "what `paretune export` picks by default" + (f"; {trade}" if trade else ""))


def baseline_line(report: FrontReport) -> str | None:
    """Where the baseline stands, or why there is none to compare with."""
    base = report.baseline
    if base is None:
        pending = [t for t in report.trials if t.user_attrs.get("baseline")]
        return ("no measured baseline: its trial did not complete; trades are stated against the most accurate front trial"
                if pending else None)
    on_front = any(t.number == base.number for t in report.front)
    values = ", ".join(f"{n}={v:.4g}" for n, v in zip(report.objectives.names, base.values))
    return f"{BASELINE_MARK} baseline (trial {base.number}, your model as it runs today): {values}" + (
        "; on the front" if on_front else "")


def print_hypervolume(console: Console, report: FrontReport, given: dict[str, float] | None = None) -> None:
    """The hypervolume, its reference point and how that point was chosen."""
    if not report.reference:
        return
    names = report.objectives.names
    derived = [n for n in names if not given or n not in given]
    how = (
        "worst feasible value widened by 10% of the range" if not given
        else "given" if not derived
        else f"given; {', '.join(derived)}: worst feasible value widened by 10% of the range"
    )
    console.print(
        f"hypervolume {report.hypervolume:.6g} with reference point "
        + ", ".join(f"{n}={v:.6g}" for n, v in zip(names, report.reference))
        + f" ({how})",
        highlight=False,
        soft_wrap=not console.is_terminal,  # a terminal wraps it between words, a log keeps one line
    )


def export_hint(name: str, storage_flag: str = "") -> str:
    """The command that writes the knee to `<study>-best.toml`."""
    return f"paretune export {name}{storage_flag} --out {name}-best.toml"
