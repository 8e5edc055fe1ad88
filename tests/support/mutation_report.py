"""Summarise a `make mutation` run: the kill rate in scope, per module, and every survivor.

    python -m tests.support.mutation_report            # after `mutmut run`
    python -m tests.support.mutation_report --diffs    # with each survivor's diff

Reads mutmut's result files under `mutants/`. Timeouts count as killed (the mutant made a
test hang, which the suite reports), "no tests" as survivors: nothing checks that code.
Functions listed in OUT_OF_SCOPE are mutated with their file but not counted: the file is in
scope for the part named in docs/testing.md, not for its connection plumbing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

MUTANTS = Path("mutants")
KILLED = {1, 3, 24, -24, 36, 152, 255, 37}
SURVIVED = {0, 5, 33}
# shared/db.py is in scope for its unit of work, after-commit hooks and the lost-connection
# classification only: the engine, session and span set-up around them is not counted.
OUT_OF_SCOPE = (
    "shared.db.x_create_engine__",
    "shared.db.x__redact_row_values__",
    "shared.db.x__ping_when_idle__",
    "shared.db.x_create_session_factory__",
    "shared.db.x_statement_span__",
)


def _results() -> dict[str, int | None]:
    results: dict[str, int | None] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        results.update(data.get("exit_code_by_key", {}))
    return results


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _module(mutant: str) -> str:
    return mutant.split(".x_")[0].split(".xǁ")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    args = parser.parse_args(argv)
    results = _results()
    if not results:
        sys.stderr.write("no mutmut results under mutants/: run `make mutation` first\n")
        return 1
    in_scope = {k: v for k, v in results.items() if not k.startswith(OUT_OF_SCOPE)}
    unchecked = sorted(k for k, v in in_scope.items() if v is None)
    survivors = sorted(k for k, v in in_scope.items() if v in SURVIVED)
    killed = sum(1 for v in in_scope.values() if v in KILLED)
    per_module: Counter[str] = Counter()
    per_module_killed: Counter[str] = Counter()
    for key, code in in_scope.items():
        per_module[_module(key)] += 1
        per_module_killed[_module(key)] += code in KILLED
    _out(f"{'module':45} {'mutants':>8} {'killed':>8} {'rate':>7}")
    for module in sorted(per_module):
        total, dead = per_module[module], per_module_killed[module]
        _out(f"{module:45} {total:8} {dead:8} {dead / total:7.1%}")
    checked = len(in_scope) - len(unchecked)
    rate = killed / checked if checked else 0.0
    _out(f"\nin scope: {len(in_scope)} mutants, {killed} killed, {len(survivors)} survived")
    _out(f"kill rate: {rate:.1%} (out of scope and not counted: {len(results) - len(in_scope)})")
    if unchecked:
        _out(f"not checked yet: {len(unchecked)}")
    if survivors:
        _out("\nsurvivors (each is explained in docs/testing.md):")
        for name in survivors:
            _out(f"  {name}")
            if args.diffs:
                shown = subprocess.run(
                    [str(Path(sys.executable).parent / "mutmut"), "show", name],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                _out("    " + shown.stdout.replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
