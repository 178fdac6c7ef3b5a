"""Run the benchmarks, print their tables, write them as markdown and JSON.

    python -m benchmarks [--quick] [--only NAME ...] [--out DIR]

--quick is the smoke run (small N, fewer seeds, budgets and repeats: a few minutes on
2 cores); without it, the full run (about half an hour). DIR gets results.md and
results.json, rewritten after each benchmark so a later failure keeps earlier tables.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

from search.core.errors import UsageError

NAMES = ("overhead", "efficiency", "early_stopping", "variants", "peers", "throughput", "stability", "compression", "streaming")
# These share one local Ray; the others measure latency and want the node quiet.
USES_RAY = ("overhead", "efficiency", "early_stopping", "variants", "peers")
DEFAULT_OUT = Path("bench-results")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: small sizes, a few minutes")
    parser.add_argument("--only", action="append", metavar="NAME", help=f"run only these (repeatable): {', '.join(NAMES)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"directory for results.md/json (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def selected(only: list[str] | None) -> list[str]:
    wanted = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in NAMES]
    if unknown:
        raise UsageError(f"--only {unknown[0]}: unknown benchmark; choose from {', '.join(NAMES)}")
    return [n for n in NAMES if not wanted or n in wanted]


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")


def write(out: Path, header: dict, tables: list, seconds: dict[str, float]) -> None:
    from benchmarks.common import to_markdown

    out.mkdir(exist_ok=True)
    data = {**header, "seconds": seconds, "tables": [t.to_dict() for t in tables]}
    (out / "results.json").write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    machine = header["machine"]
    lines = [
        f"Command: `{header['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load average {machine['load_average_1m']} at the start; "
        f"CPU flags: {machine.get('cpu_flags') or 'none listed'}; "
        f"Python {machine['python']}, torch {machine['torch']}, Ray {machine['ray']}, Optuna {machine['optuna']}.",
        "",
        "Seconds per benchmark: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n" + "\n".join(to_markdown(t) for t in tables))


def _json_default(value):
    return float(value) if hasattr(value, "__float__") else str(value)


def show(table) -> None:
    """Markdown on stdout: as readable in a CI log as in a terminal, at any width."""
    from benchmarks.common import to_markdown

    print(to_markdown(table), flush=True)


def run(names: list[str], quick: bool, out: Path, command: str) -> list:
    import importlib

    import optuna

    from benchmarks.common import machine, ray_session

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    header = {"command": command, "quick": quick, "machine": machine()}
    tables, seconds = [], {}

    def one(name: str) -> None:
        started = time.perf_counter()
        produced = importlib.import_module(f"benchmarks.{name}").run(quick=quick)
        seconds[name] = time.perf_counter() - started
        for table in produced:
            show(table)
        tables.extend(produced)
        write(out, header, tables, seconds)

    ray_group = [n for n in names if n in USES_RAY]
    if ray_group:
        with ray_session():
            for name in ray_group:
                one(name)
    for name in names:
        if name not in USES_RAY:
            one(name)
    return tables


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        names = selected(args.only)
        check_out(args.out)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    tables = run(names, args.quick, args.out, command.strip())
    bad = [t.name for t in tables if not all(math.isfinite(v) for v in t.numbers())]
    print(f"results: {args.out / 'results.md'} and {args.out / 'results.json'}")
    if bad:
        print(f"non-finite figures in: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
