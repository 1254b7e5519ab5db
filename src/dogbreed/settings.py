"""One typed way to declare a setting: name, type, default, flag, environment variable, help.

Training hyperparameters (`config.TrainConfig`), serving settings (`serve.settings.ServeSettings`)
and the multi-host launcher (`train.launch.LaunchOptions`) are dataclasses whose fields are
declared with `setting(...)`. The functions here turn that one declaration into a command-line
flag, read it from the environment, convert a text value to the field's type, and list it for
the README's tables (tests/test_config.py holds the tables to `specs`).

Standard library only: every layer reads it.
"""

from __future__ import annotations

import argparse
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_METADATA_KEY = "dogbreed.setting"


class SettingError(ValueError):
    """A flag, variable or hyperparameter whose value has the wrong type or is out of range."""


@dataclass(frozen=True)
class Spec:
    """What a field declared with `setting` is, read once from the dataclass."""

    name: str
    kind: type  # bool, int, float or str (an Optional's inner type)
    default: Any
    help: str
    env: str | None  # the environment variable, if one sets it
    flag: str | None  # `--batch-size`, or None when no command-line flag sets it
    choices: tuple[str, ...] | None
    minimum: float | None  # inclusive lower bound of a number


def setting(
    default: Any,
    help: str,
    *,
    env: str | None = None,
    flag: bool = True,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
) -> Any:
    """A dataclass field carrying its setting declaration."""
    declared = {"help": help, "env": env, "flag": flag, "choices": choices, "minimum": minimum}
    return field(default=default, metadata={_METADATA_KEY: declared})


@functools.cache
def specs(cls: type) -> tuple[Spec, ...]:
    """The declared settings of `cls`, in field order."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        declared = f.metadata.get(_METADATA_KEY)
        if declared is None:
            continue
        flag = "--" + f.name.replace("_", "-") if declared["flag"] else None
        found.append(
            Spec(
                name=f.name,
                kind=_inner_type(hints[f.name]),
                default=f.default,
                help=declared["help"],
                env=declared["env"],
                flag=flag,
                choices=declared["choices"],
                minimum=declared["minimum"],
            )
        )
    return tuple(found)


def spec(cls: type, name: str) -> Spec:
    return next(s for s in specs(cls) if s.name == name)


def _inner_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_float(raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {raw!r}") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf", and NaN passes every minimum
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _to_int(raw: Any) -> int:
    as_float = _to_float(raw)  # "8" and 8.0 are 8
    if not as_float.is_integer():
        raise ValueError(f"not an integer: {raw!r}")
    return int(as_float)


def convert(declared: Spec, raw: Any, source: str) -> Any:
    """`raw` (text, or a value already typed) as the field's type, within its choices and
    minimum; `source` names where it came from in the error (`--workers`, `DOGBREED_TOP_K`)."""
    try:
        if declared.kind is bool:
            value: Any = to_bool(raw)
        elif declared.kind is int:
            value = _to_int(raw)
        elif declared.kind is float:
            value = _to_float(raw)
        else:
            value = str(raw)
            if declared.choices and value.lower() in declared.choices:
                value = value.lower()  # ONNX is onnx
    except (TypeError, ValueError) as exc:
        raise SettingError(f"{source}: {exc}") from None
    if declared.choices and value not in declared.choices:
        raise SettingError(f"{source} must be one of {', '.join(declared.choices)}, not {value!r}")
    if declared.minimum is not None and value < declared.minimum:
        raise SettingError(f"{source} must be at least {declared.minimum:g}, not {value!r}")
    return value


def describe(declared: Spec, list_choices: bool = True) -> str:
    """The flag's help: the declaration's text, its default, choices and variable."""
    text = declared.help
    if declared.default is not None:
        text += f" (default: {declared.default})"
    if declared.choices and list_choices:
        text += f"; one of {', '.join(declared.choices)}"
    if declared.env:
        text += f"; ${declared.env}"
    return text


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    typed: bool = True,
    underscore_spellings: bool = False,
) -> None:
    """One flag per declared setting that has one; unset flags stay None.

    typed: a bad value is argparse's usage error; untyped flags keep the text for the caller
    to convert (training reads flags and hyperparameters.json alike). Booleans take
    `--amp`, `--amp false` and `--no-amp`.
    """
    for declared in specs(cls):
        if declared.flag is None:
            continue
        flags = [declared.flag]
        if underscore_spellings and "_" in declared.name:
            flags.append(f"--{declared.name}")
        common: dict[str, Any] = {
            "dest": declared.name,
            "default": None,
            "help": describe(declared, list_choices=not typed),
        }
        if declared.kind is bool:
            parser.add_argument(*flags, nargs="?", const="true", metavar="BOOL", **common)
            parser.add_argument(
                f"--no-{declared.flag[2:]}",
                dest=declared.name,
                action="store_const",
                const="false",
                help=argparse.SUPPRESS,
            )
            continue
        if typed:
            kind = functools.partial(_argparse_type, declared)
            parser.add_argument(*flags, type=kind, choices=declared.choices, **common)
        else:
            parser.add_argument(*flags, metavar=declared.name.upper(), **common)


def _argparse_type(declared: Spec, raw: str) -> Any:
    try:
        return convert(declared, raw, declared.flag or declared.name)
    except SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def given_flags(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The declared flags that were given on the command line, by field name."""
    return {
        s.name: getattr(args, s.name)
        for s in specs(cls)
        if s.flag and getattr(args, s.name, None) is not None
    }


def from_environ(
    cls: type, environ: Mapping[str, str], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The declared variables that are set (and not in `skip`), converted, by field name."""
    values = {}
    for declared in specs(cls):
        raw = environ.get(declared.env or "", "").strip()
        if declared.env and raw and declared.env not in skip:
            values[declared.name] = convert(declared, raw, declared.env)
    return values


def check(instance: Any) -> None:
    """Each declared field of `instance` that is set has its type, choices and minimum (the
    same `convert` that flags and variables go through)."""
    for declared in specs(type(instance)):
        value = getattr(instance, declared.name)
        if value is not None:
            convert(declared, value, declared.name)
