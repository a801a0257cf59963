"""`engine bounce parse [--json] FILE...`: one line per file, errors on stderr, exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from engine.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"


def test_json_lines_one_per_file_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    files = [
        str(FIXTURES / "own-postfix-userunknown.msg"),
        str(FIXTURES / "own-arf-fraud.msg"),
        str(FIXTURES / "neg-newsletter.msg"),
    ]
    assert main(["bounce", "parse", "--json", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [orjson.loads(line) for line in lines]
    assert [d["file"] for d in docs] == files
    assert [d["kind"] for d in docs] == ["dsn", "arf", "unknown"]
    assert docs[0]["recipients"][0]["reason"] == "userunknown"
    assert docs[1]["feedback_type"] == "fraud"
    assert docs[2]["recipients"] == []


def test_unreadable_file_is_reported_and_the_rest_still_parsed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.msg"
    good = str(FIXTURES / "own-qmail-quota.msg")
    assert main(["bounce", "parse", "--json", str(missing), good]) == 1
    captured = capsys.readouterr()
    assert [orjson.loads(line)["file"] for line in captured.out.splitlines()] == [good]
    assert str(missing) in captured.err
    assert captured.err.count("\n") == 1


def test_human_summary(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(FIXTURES / "own-gmail-nosuchuser.msg")
    assert main(["bounce", "parse", path]) == 0
    assert capsys.readouterr().out == f"{path}: dsn ivan@gmail.example 5.1.1 userunknown hard\n"


def test_thousands_of_files_in_one_call(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = FIXTURES / "own-exim-multi.msg"
    paths = []
    for index in range(2000):
        target = tmp_path / f"{index}.msg"
        shutil.copyfile(source, target)
        paths.append(str(target))
    assert main(["bounce", "parse", "--json", *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2000
    assert orjson.loads(lines[-1])["recipients"][1]["reason"] == "mailboxfull"


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bounce"]) == 2
    assert "subcommand" in capsys.readouterr().err
