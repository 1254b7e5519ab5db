"""One declaration per setting (dogbreed.settings): the flags, the environment and the README's
tables all come from it, for serving, the launcher and (tests/test_config.py) hyperparameters."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from dogbreed.serve.settings import ENV_NAMES, ServeSettings, add_server_arguments
from dogbreed.settings import (
    SettingError,
    add_arguments,
    from_environ,
    given_flags,
    setting,
    specs,
)
from dogbreed.train.distributed import PeerWatchSettings
from dogbreed.train.launch import LaunchOptions

REPO = Path(__file__).resolve().parent.parent
# A variable the README's tables list that is not a setting of these dataclasses: the
# test-only resolver's, read where it is used.
READ_ELSEWHERE = {"DOGBREED_HOST_ADDRESSES"}


@dataclass(frozen=True)
class Example:
    count: int = setting(2, "how many", env="EXAMPLE_COUNT", minimum=1)
    ratio: float | None = setting(None, "a fraction", env="EXAMPLE_RATIO")
    mode: str = setting("fast", "how", env="EXAMPLE_MODE", choices=("fast", "slow"))
    loud: bool = setting(False, "shout", flag=True)
    hidden: str = setting("x", "only from the environment", env="EXAMPLE_HIDDEN", flag=False)


def parser_for(cls: type, typed: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, cls, typed=typed)
    return parser


def test_one_declaration_gives_typed_flags_and_variables() -> None:
    args = parser_for(Example).parse_args(["--count", "3", "--mode", "SLOW", "--loud"])
    assert given_flags(Example, args) == {"count": 3, "mode": "slow", "loud": "true"}
    assert not hasattr(args, "hidden")  # flag=False: the environment only
    environ = {"EXAMPLE_RATIO": "0.25", "EXAMPLE_HIDDEN": "y", "EXAMPLE_COUNT": " "}
    assert from_environ(Example, environ) == {"ratio": 0.25, "hidden": "y"}
    assert given_flags(Example, parser_for(Example).parse_args(["--no-loud"])) == {"loud": "false"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EXAMPLE_COUNT": "two"}, r"EXAMPLE_COUNT: not a number: 'two'"),
        ({"EXAMPLE_COUNT": "2.5"}, r"EXAMPLE_COUNT: not an integer: '2.5'"),
        ({"EXAMPLE_COUNT": "0"}, r"EXAMPLE_COUNT must be at least 1, not 0"),
        ({"EXAMPLE_RATIO": "nan"}, r"EXAMPLE_RATIO: not a finite number: 'nan'"),
        ({"EXAMPLE_COUNT": "inf"}, r"EXAMPLE_COUNT: not a finite number: 'inf'"),
        ({"EXAMPLE_MODE": "medium"}, r"EXAMPLE_MODE must be one of fast, slow, not 'medium'"),
    ],
)
def test_a_bad_variable_names_itself(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=message):
        from_environ(Example, environ)


def test_a_bad_typed_flag_is_a_usage_error_and_an_untyped_one_is_kept_as_text() -> None:
    with pytest.raises(argparse.ArgumentError, match="--count must be at least 1"):
        parser_for(Example).parse_args(["--count", "0"])
    args = parser_for(Example, typed=False).parse_args(["--count", "0", "--mode", "medium"])
    assert (args.count, args.mode) == ("0", "medium")  # the caller converts (and reports)


def test_serving_variables_flags_and_the_deploy_command_share_the_declaration() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    flags = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    assert flags == {s.name for s in specs(ServeSettings) if s.flag}
    assert ENV_NAMES["top_k"] == "DOGBREED_TOP_K"
    settings = ServeSettings.from_env({"DOGBREED_TOP_K": "3", "DOGBREED_BACKEND": "ONNX"})
    assert (settings.top_k, settings.backend) == (3, "onnx")
    # What a worker reads back is what the supervisor resolved.
    assert ServeSettings.from_env(settings.to_env()) == settings


def table_rows(doc: str, heading: str) -> list[list[str]]:
    """The cells of the first table under `heading` (`### Serving`) in `doc`."""
    text = (REPO / doc).read_text()
    level = heading.split()[0]
    body = text.split(f"\n{heading}\n", 1)[1].split(f"\n{level} ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def shown(value: object) -> str:
    """A default as the README writes it: `auto`, 50,000,000, 6 (not 6.0)."""
    return format(value, "g") if isinstance(value, float) else str(value)


@pytest.mark.parametrize(
    ("classes", "doc", "section"),
    [
        ((ServeSettings,), "README.md", "### Serving"),
        ((ServeSettings,), "docs/serving.md", "## Flags and environment"),
        ((LaunchOptions, PeerWatchSettings), "README.md", "### Training: paths, hosts, launch"),
    ],
)
def test_the_settings_tables_list_every_declared_setting(
    classes: tuple[type, ...], doc: str, section: str
) -> None:
    rows = {re.sub(r"[`\s]", "", row[1]): row for row in table_rows(doc, section) if row[1]}
    declared_specs = [declared for cls in classes for declared in specs(cls)]
    for declared in declared_specs:
        assert declared.env in rows, f"{doc} {section}: no row for {declared.env}"
        flag_cell, _, default_cell = rows[declared.env][:3]
        if declared.flag:
            assert flag_cell.strip("`").split()[0].rstrip("`,") == declared.flag, declared.env
        if declared.default is not None:
            written = re.sub(r"[`,]", "", default_cell)
            # The default, then a word boundary: "2" must not pass for "20" or "25".
            expected = rf"{re.escape(shown(declared.default))}\b"
            assert re.match(expected, written), (declared.env, default_cell)
    declared_envs = {s.env for s in declared_specs}
    ours = {env for env in rows if env.startswith("DOGBREED_")}
    assert ours - declared_envs - READ_ELSEWHERE == set(), f"{doc}: rows nothing declares"
