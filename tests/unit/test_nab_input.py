"""`predictor nab` on bad input: a malformed CSV is named with its file and line, a missing or empty folder is one
line; exit 2 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictor.cli import main

GOOD = "timestamp,value\n2014-04-01 00:00:00,1.5\n2014-04-01 00:05:00,2.0\n"


def nab_folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    data = tmp_path / "data"
    for name, content in files.items():
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return data


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["nab", *argv]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (GOOD + "2014-04-01 00:10:00\n", 4, "expected the fields timestamp,value, got '2014-04-01 00:10:00'"),
        (GOOD + "2014-04-01 00:10:00,high\n", 4, "expected a number in the value column, got 'high'"),
        ("timestamp,value\n01/04/2014 00:00,1\n", 2, "expected a timestamp such as '2014-04-01 00:00:00', got "
                                                    "'01/04/2014 00:00'"),
        ("time,reading\n2014-04-01 00:00:00,1\n", 1, "expected the columns timestamp,value, got 'time,reading'"),
        ("", 1, "expected the columns timestamp,value, got ''"),
        (GOOD + '2014-04-01 00:10:00,"3\n', 4, "not CSV: unexpected end of data"),
    ],
)
def test_a_malformed_csv_is_named_with_its_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, line: int, message: str
) -> None:
    data = nab_folder(tmp_path, {"realKnownCause/a.csv": GOOD, "realKnownCause/b.csv": content})
    assert refused(capsys, "--data", str(data), "--out", str(tmp_path / "out"), "--workers", "1") == (
        f"predictor nab: {data}/realKnownCause/b.csv:{line}: {message}")


def test_bytes_that_are_not_utf8_are_named_with_the_line_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = (GOOD + "2014-04-01 00:10:00,\xb13\n").encode("latin-1")
    data = nab_folder(tmp_path, {"realTraffic/x.csv": content})
    offset = content.index(b"\xb1")
    assert refused(capsys, "--data", str(data), "--out", str(tmp_path / "out")) == (
        f"predictor nab: {data}/realTraffic/x.csv:4: expected UTF-8 text, got b'\\xb1' at byte offset {offset}")


def test_a_bad_row_stops_the_run_with_several_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = nab_folder(tmp_path, {"a/one.csv": GOOD, "b/two.csv": GOOD + "2014-04-01 00:10:00,x\n"})
    assert refused(capsys, "--data", str(data), "--out", str(tmp_path / "out"), "--workers", "2") == (
        f"predictor nab: {data}/b/two.csv:4: expected a number in the value column, got 'x'")


def test_an_empty_value_is_a_missing_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = nab_folder(tmp_path, {"a/gap.csv": GOOD + "2014-04-01 00:10:00,\n"})
    assert main(["nab", "--data", str(data), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    rows = (tmp_path / "out" / "a" / "gap.csv").read_text().splitlines()
    assert rows[0] == "timestamp,value,anomaly_score" and rows[-1].startswith("2014-04-01 00:10:00,,")


def test_a_missing_or_empty_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert refused(capsys, "--data", str(tmp_path / "nope"), "--out", out) == (
        f"predictor nab: {tmp_path / 'nope'}: no such folder")
    (tmp_path / "file").write_text("x")
    assert refused(capsys, "--data", str(tmp_path / "file"), "--out", out) == (
        f"predictor nab: {tmp_path / 'file'}: not a folder")
    flat = nab_folder(tmp_path, {"a.csv": GOOD})  # the CSVs one level too high: no category folder
    assert refused(capsys, "--data", str(flat), "--out", out) == (
        f"predictor nab: {flat}: no CATEGORY/NAME.csv file (expected NAB's data folder, with one folder per "
        "category such as realKnownCause/)")


def test_the_output_folder_may_not_be_the_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = nab_folder(tmp_path, {"a/one.csv": GOOD})
    assert refused(capsys, "--data", str(data), "--out", str(data) + "/") == (
        f"predictor nab: {data}: the output folder is the data folder (the scores would overwrite the data)")
    assert (data / "a" / "one.csv").read_text() == GOOD


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_positive_whole_number(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 workers: str) -> None:
    assert main(["nab", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--workers", workers]) == 2
    assert f"argument --workers: expected a whole number >= 1, got '{workers}'" in capsys.readouterr().err
