"""Every option the components declare, in one registry: the command line's flags, the config file's keys and
the Python API's keywords all come from here, so a setting is spelt once and a misspelt one is refused.

Owners: the build itself (target, output, checks, cache, autotuning), the frontends (source options),
calibration, each pass, each target. Keys are unique across all of
them (tests/test_options.py), so one flat namespace serves ``infer.toml``, ``infer_compile.compile(**options)``
and the CLI.

Collecting them imports no pass or target implementation (numpy, onnx, graphsurgeon): the command line is made from
them on every start, and a cache hit needs nothing else (tests/test_cache.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infer_compile.app.build_options import BUILD_OPTIONS
from infer_compile.calibration.options import CALIB, CALIBRATION_OPTIONS
from infer_compile.core.errors import UserInputError
from infer_compile.core.options import Option, refuse_unknown
from infer_compile.frontends.specs import SOURCE_OPTIONS
from infer_compile.passes.options import PASS_OPTIONS
from infer_compile.targets import TARGETS, Target

if TYPE_CHECKING:
    from infer_compile.passes import Pass


@dataclass(frozen=True)
class Group:
    """Options of one owner kind, shown as one panel of `--help` (Polygraphy-style argument groups)."""

    title: str
    owner: str  # the ComponentOptions field its values go to: "build", "source", "calibration", "passes" or "target"
    options: tuple[Option[Any], ...]


@functools.cache
def groups() -> tuple[Group, ...]:
    return (Group("Build", "build", BUILD_OPTIONS),
            Group("Source model", "source", SOURCE_OPTIONS),
            Group("Calibration (--int8)", "calibration", CALIBRATION_OPTIONS),
            Group("Passes", "passes", PASS_OPTIONS),
            *(Group(f"Target {target.name}", "target", target.options) for target in TARGETS if target.options))


@functools.cache
def declared() -> dict[str, tuple[Option[Any], Group]]:
    """Every declared option by key, with its group."""
    return {option.key: (option, group) for group in groups() for option in group.options}


@dataclass
class ComponentOptions:
    """Option values sorted by owner, each checked and converted by its declaration."""

    build: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)


def sort_options(values: Mapping[str, Any], spelling: Callable[[Option[Any]], str] = lambda o: o.key,
                 ) -> ComponentOptions:
    """``values`` by option key (None = not given) checked against the declarations and sorted by owner;
    ``spelling`` names an option in messages as the user wrote it (the CLI flag, the config key)."""
    options = declared()
    refuse_unknown(values, options, "option")
    given = {key: value for key, value in values.items() if value is not None and value != [] and value != {}}
    sorted_ = ComponentOptions()
    for key, raw in given.items():
        option, group = options[key]
        refuse_missing_need(option, given, spelling)
        getattr(sorted_, group.owner)[key] = option.value(raw, spelling(option))
    return sorted_


def refuse_missing_need(option: Option[Any], given: Iterable[str], spelling: Callable[[Option[Any]], str]) -> None:
    """Refuse ``option`` when the option it needs (``Option.needs``) is not among the ``given`` keys."""
    if option.needs and option.needs not in given:
        needed = spelling(declared()[option.needs][0])
        raise UserInputError(f"{spelling(option)} needs {needed}",
                             hint=f"give {needed} too, or drop {spelling(option)}")


def check_pass_options(options: Mapping[str, Any], pipeline: list[Pass], precision: str, target: Target,
                       calibrated: bool, spelling: Callable[[Option[Any]], str] = lambda o: o.cli_flag) -> None:
    """Refuse pass options no pass of this build reads: an option for another precision, for a pass the
    user skipped, or for passes the target replaces with its own converter; and one given without the option
    it needs (``calibrated``: the build has calibration data)."""
    from infer_compile.passes import all_passes

    running = {option.key for p in pipeline for option in p.options}
    given = {*options, *([CALIB.key] if calibrated else [])}
    for key in options:
        option = declared()[key][0]
        refuse_missing_need(option, given, spelling)
        if key in running:
            continue
        if option.precisions and precision not in option.precisions:
            builds = " or ".join(f"--{p}" for p in sorted(option.precisions, reverse=True))
            raise UserInputError(f"{spelling(option)} only applies to {builds} builds",
                                 hint=f"add {builds.split(' or ')[0]}, or drop {spelling(option)}")
        owners = [cls.name for cls in all_passes().values() if option in cls.options]
        raise UserInputError(f"{spelling(option)} does not apply: this {precision} build for target "
                             f"'{target.name}' does not run {', '.join(owners)}",
                             hint="drop it (a skipped pass, or one the target's own converter replaces)")


def check_target_options(options: Mapping[str, Any], target: Target,
                         spelling: Callable[[Option[Any]], str] = lambda o: o.cli_flag) -> dict[str, Any]:
    """The target options checked by ``target``; one meant for another target is named as such."""
    own = {option.key for option in target.options}
    for key in options:
        if key not in own and key in declared():
            owner = next(t.name for t in TARGETS if key in {option.key for option in t.options})
            raise UserInputError(f"{spelling(declared()[key][0])} is a setting of target '{owner}', not of "
                                 f"'{target.name}'", hint=f"drop it, or build for --target {owner}")
    return target.check_options(options)
