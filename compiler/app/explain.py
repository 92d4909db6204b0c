"""`--explain PASS`: what a pass's rules matched, and why they did not fire on the other nodes they looked at."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from infer_compile.core.errors import UserInputError
from infer_compile.core.options import closest

if TYPE_CHECKING:
    from infer_compile.passes import PassRecord

EVERY_PASS = "all"


def explained_passes(names: Sequence[str]) -> list[str]:
    """The pass names --explain asked for (or ``all``), once each; a misspelt name is refused."""
    if not names:  # the passes load only to check names: a build without --explain (a cache hit) needs none
        return []
    from infer_compile.passes import all_passes

    known = list(all_passes())
    for name in names:
        if name != EVERY_PASS and name not in known:
            raise UserInputError(f"unknown pass '{name}' for --explain{closest(name, [*known, EVERY_PASS])}",
                                 hint="'infer-compile passes' lists the pass names; 'all' explains every pass")
    return list(dict.fromkeys(names))


def print_explanations(records: Sequence[PassRecord], names: Sequence[str], console: Console) -> None:
    """Per pass named (``all``: every pass the build ran or skipped): its rule counts, then each near-miss
    reason with how many nodes and a few of them."""
    by_name = {r.name: r for r in records}
    for name in by_name if EVERY_PASS in names else names:
        record = by_name.get(name)
        if record is None:
            console.print(f"[bold]explain {name}[/]: not in this build's pipeline", highlight=False)
            continue
        if record.status == "skipped":
            console.print(f"[bold]explain {name}[/]: skipped ({escape(record.reason)})", highlight=False)
            continue
        matched = ", ".join(f"{rule}={n}" for rule, n in record.counts.items() if n) or "nothing"
        console.print(f"[bold]explain {name}[/]: matched {escape(matched)}", highlight=False)
        from infer_compile.passes import all_passes
        from infer_compile.passes.rewrite import RewritePass

        if not issubclass(all_passes()[name], RewritePass):
            console.print("  (no rewrite rules: counts only)", highlight=False)
        for rule, reasons in record.misses.items():
            for reason, summary in sorted(reasons.items(), key=lambda item: -item[1]["count"]):
                more = ", ..." if summary["count"] > len(summary["examples"]) else ""
                examples = ", ".join(summary["examples"]) + more
                console.print(f"  {rule} missed {summary['count']}: {escape(reason)} (e.g. {escape(examples)})",
                              soft_wrap=True, highlight=False)
