"""The ``iampool`` command's usage errors, through ``main(argv)``: no AWS, no database.

A mistyped flag is reported by the subcommand it was given to, with the closest flag it has and
a pointer to that subcommand's help; a block with ``"enabled": false`` is told so first.
"""

from __future__ import annotations

import json
import re

import pytest

from iampool import ConfigError
from iampool.cli import _parser, main
from iampool.pools import resolve

BLOCK = json.dumps({"enabled": True, "region": "us-east-1", "db_username": "app"})


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What ``iampool <argv>`` says on standard error; it must exit 2, on one line."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    return captured.err.strip()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["token", "--extra", BLOCK, "--hots", "db.example"],
            "iampool token: unrecognized arguments: --hots; did you mean --host? "
            "(see iampool token --help)",
        ),
        (
            # before the missing --extra: the typo is what to fix
            ["token", "--exta", BLOCK, "--host", "db.example", "--port", "5432"],
            "iampool token: unrecognized arguments: --exta; did you mean --extra? "
            "(see iampool token --help)",
        ),
        (
            ["check", "postgresql://db.example/app", "--extra", BLOCK, "--sslrootcrt=ca.pem"],
            "iampool check: unrecognized arguments: --sslrootcrt; did you mean --sslrootcert? "
            "(see iampool check --help)",
        ),
        (
            ["demo", "--xyzzy", "3"],
            "iampool demo: unrecognized arguments: --xyzzy (see iampool demo --help)",
        ),
        (
            ["demo", "--wrokers", "3"],
            "iampool demo: unrecognized arguments: --wrokers; did you mean --workers? "
            "(see iampool demo --help)",
        ),
        (
            ["token", "--extra", BLOCK, "db.example"],
            "iampool token: unrecognized arguments: db.example (see iampool token --help)",
        ),
    ],
    ids=["token-hots", "token-exta", "check-sslrootcrt", "demo-no-match", "demo-wrokers", "stray"],
)
def test_a_mistyped_flag_is_reported_by_its_subcommand(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert usage_error(capsys, *argv) == said


def test_a_flag_value_that_looks_like_a_flag_is_not_taken_for_a_typo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --extra takes the next argument whatever it looks like; argparse then reports the
    # missing value of --extra, not an unknown flag
    said = usage_error(capsys, "token", "--extra", "--hots")
    assert (
        said == "iampool token: argument --extra: expected one argument (see iampool token --help)"
    )


def test_an_abbreviated_flag_is_still_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    # "--ho" abbreviates --host: it gets as far as the block, which is disabled
    code = main(["token", "--extra", '{"enabled": false}', "--ho", "db.example", "--port", "1"])
    assert code == 2
    assert capsys.readouterr().err.startswith("iampool token: invalid aws_iam configuration")


def test_an_unknown_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    said = usage_error(capsys, "tokn")
    assert said.startswith("iampool: argument COMMAND: invalid choice: 'tokn'")
    assert said.endswith("(see iampool --help)")


@pytest.mark.parametrize("command", ["token", "check"])
def test_a_disabled_block_says_enabled_is_false_before_what_it_lacks(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = {
        "token": ["token", "--extra", '{"enabled": false}', "--host", "db.example", "--port", "1"],
        "check": ["check", "postgresql://db.example/app", "--extra", '{"enabled": false}'],
    }[command]

    assert main(argv) == 2

    said = capsys.readouterr().err.strip()
    assert said == (
        f"iampool {command}: invalid aws_iam configuration (2 problems): enabled: is false: "
        'this aws_iam block does not ask for IAM auth (set "enabled": true to use it); '
        "db_username: is required (the database user granted rds_iam / IAM login)"
    )


def test_a_disabled_complete_block_says_only_that(capsys: pytest.CaptureFixture[str]) -> None:
    block = json.dumps({"aws_iam": {"enabled": False, "region": "us-east-1", "db_username": "a"}})

    assert main(["token", "--extra", block, "--host", "db.example", "--port", "1"]) == 2

    assert capsys.readouterr().err.strip() == (
        "iampool token: enabled: is false: this aws_iam block does not ask for IAM auth "
        '(set "enabled": true to use it)'
    )


def test_an_enabled_incomplete_block_is_not_told_about_enabled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "--extra", '{"enabled": true}', "--host", "h", "--port", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "iampool token: db_username: is required (the database user granted rds_iam / IAM login)"
    )


def test_a_pool_given_a_disabled_block_is_told_so_first() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve("postgresql://db.example/app", {"enabled": False}, None)
    assert raised.value.fields == ["enabled", "db_username"]


@pytest.mark.parametrize("command", sorted(_parser().commands))
def test_every_flag_a_command_shows_is_one_it_knows(command: str) -> None:
    # the flags are recorded as they are declared (add_argument): a flag declared some other
    # way would be refused as unknown
    parser = _parser().commands[command]
    options = parser.format_help().partition(parser.epilog or "\0")[0]  # examples: any command
    shown = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", options))
    assert shown
    assert shown <= set(parser.flags)


def test_the_commands_are_known_by_name() -> None:
    assert {"token", "check", "demo"} <= set(_parser().commands)
