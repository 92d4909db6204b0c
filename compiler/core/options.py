"""Options declared once, by the component that reads them.

A pass, target, calibrator or frontend lists its ``Option``s; the command line's flags, the config file's keys
and the Python API's keywords are generated from those lists (``infer_compile.app.settings``), so a setting
exists in one place and a misspelt one is refused with the closest valid name. (Model: Polygraphy's
per-backend argument groups; onnx-ir passes taking typed constructor arguments.)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from infer_compile.core.errors import UserInputError

T = TypeVar("T")
# Covariant: an option holding a list[str] serves where an iterable of names is read (set(ctx.option(...))).
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Option(Generic[T_co]):
    """One setting: its key (config key and API keyword), value type, default and help.

    ``kind`` is the type a user gives on the command line (bool, int, float, str, Path, or list for a
    repeatable flag of strings). ``parse``, when set, turns any given value (typed text such as ``"2m"``, a list
    of flags, or the config file's richer form) into what the component reads, raising UserInputError when it
    cannot; without it the value must be of ``kind``. ``flag`` is the command-line spelling (default
    ``--key-with-dashes``). ``precisions`` limits the builds the option applies to ("int8", "fp16"); ``needs``
    names an option that must be given with this one (``--percentile`` needs ``--calib``). ``env`` names an
    environment variable that replaces the default on every surface (``$INFER_COMPILE_TUNE_TIME``); ``short`` is
    a one-letter flag beside ``flag``. ``config`` False: not a key of build config files (a setting the config
    has in another form: ``targets``/``precisions`` lists, ``output_dir``).
    """

    key: str
    kind: type
    default: T_co
    help: str
    flag: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    parse: Callable[[Any], T_co] | None = None
    precisions: frozenset[str] = frozenset()
    needs: str = ""
    path: bool = False  # a file or folder: a config file's relative value is relative to that file
    cli: bool = True  # False: a structured setting (a table of runtime settings) for config files and the API only
    config: bool = True
    env: str = ""
    short: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    def fallback(self) -> T_co:
        """The value when none is given: ``$env`` (checked like a given value) when set, else the default."""
        if self.env and (raw := os.environ.get(self.env)) is not None:
            return self.value(raw, f"${self.env}")
        return self.default

    def value(self, raw: Any, given_as: str) -> T_co:
        """``raw`` checked and converted (``given_as`` names where it came from, for the message)."""
        value: Any  # of type T_co once checked: parse returns one, or isinstance against ``kind`` vouches for it
        if self.parse is not None:
            try:
                value = self.parse(raw)
            except (TypeError, ValueError) as exc:  # a parser's own UserInputError says more and passes through
                raise UserInputError(f"{given_as}: {exc}", hint=self.help) from None
        else:
            value = float(raw) if self.kind is float and type(raw) is int else raw
            if not isinstance(value, self.kind) or (isinstance(value, bool) and self.kind is not bool):
                raise UserInputError(f"{given_as}: expected {self.kind.__name__}, got {type(raw).__name__} {raw!r}",
                                     hint=self.help)
            if isinstance(value, list) and not all(isinstance(item, str) for item in value):
                raise UserInputError(f"{given_as}: expected a list of strings, got {raw!r}", hint=self.help)
        if self.choices and value not in self.choices:
            raise UserInputError(f"{given_as}: '{value}' is not one of {', '.join(self.choices)}", hint=self.help)
        if self.minimum is not None and value < self.minimum:
            raise UserInputError(f"{given_as}: {value} is below the minimum {self.minimum:g}", hint=self.help)
        return value  # type: ignore[no-any-return]


def name_list(values: Any) -> list[str]:
    """Names from repeatable flags that also take comma-separated lists: ["a,b", "c"] -> ["a", "b", "c"]."""
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"expected a list of names, got {values!r}")
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def closest(name: str, known: Iterable[str]) -> str:
    """', did you mean X?' for the known name closest to ``name``, else ''."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def refuse_unknown(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """One line naming the first unknown key of ``given`` and the closest known one."""
    known = sorted(known)
    for key in given:
        if key not in known:
            raise UserInputError(f"unknown {what} '{key}'{closest(key, known)}",
                                 hint=f"known: {', '.join(known) or 'none'}")


def checked(options: Iterable[Option[Any]], values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``values`` by key, every key declared in ``options`` and every value converted by its option."""
    declared = {option.key: option for option in options}
    refuse_unknown(values, declared, what)
    return {key: declared[key].value(value, f"{what} '{key}'") for key, value in values.items()}


def read(options: Mapping[str, Any], option: Option[T]) -> T:
    """The value of ``option`` in already checked ``options``, else its default (or its ``env`` variable's)."""
    return options[option.key] if option.key in options else option.fallback()
