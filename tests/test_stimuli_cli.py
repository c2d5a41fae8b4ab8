"""``brainalign story info`` through click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner

from brainalign.cli import main
from brainalign.stimuli import bundled_story


def test_story_info_bundled_story():
    result = CliRunner().invoke(main, ["story", "info"])
    assert result.exit_code == 0, result.output
    story = bundled_story()
    lines = result.output.splitlines()
    assert f"words    {len(story.words)} in 2 run(s)" in lines
    assert (f"scan     TR 2 s, {story.n_volumes[0]} + {story.n_volumes[1]} volumes, first "
            "volume at 0, 0 s") in lines
    rows = [line.split() for line in lines if line[:3].strip() in ("1", "2")]
    for row, summary in zip(rows, story.run_summary()):
        assert int(row[1]) == summary["n_words"]
        assert float(row[3]) == summary["last_offset_s"]
        assert float(row[5]) == round(summary["words_per_s"], 2)
        assert float(row[6]) == summary["n_volumes"] * 2.0
        assert float(row[7]) == 0.0 and float(row[8]) == summary["n_volumes"] * 2.0
        assert row[9] == "0"
    assert "MISMATCH" not in result.output


def test_story_info_checks_the_words_against_a_given_scan(tmp_path):
    table = tmp_path / "words.tsv"
    table.write_text("word\tonset\toffset\n" + "".join(
        f"w{i}\t{20 + i}\t{20.5 + i}\n" for i in range(30)))  # words 20 .. 49.5 s
    fits = CliRunner().invoke(main, ["story", "info", str(table), "--tr", "2", "--n-volumes",
                                     "15", "--first-volume-s", "20"])
    assert fits.exit_code == 0, fits.output
    assert "scan     TR 2 s, 15 volumes, first volume at 20 s" in fits.output
    assert "MISMATCH" not in fits.output
    # the same scan stamped from 0 s: every word after 30 s falls after the last volume
    shifted = CliRunner().invoke(main, ["story", "info", str(table), "--tr", "2",
                                        "--n-volumes", "15", "--first-volume-s", "0"])
    assert shifted.exit_code == 0, shifted.output
    row = next(line.split() for line in shifted.output.splitlines() if line.startswith("  1 "))
    assert row[7:] == ["0.000", "30.000", "20"]
    assert ("MISMATCH run 1: 20 word(s) outside the scan: words 20.000 .. 49.500 s, scan "
            "0.000 .. 30.000 s") in shifted.output
    partial = CliRunner().invoke(main, ["story", "info", str(table), "--tr", "2"])
    assert partial.exit_code == 2 and "--n-volumes and --first-volume-s" in partial.output


def test_story_info_table_and_text(tmp_path):
    table = tmp_path / "two.tsv"
    table.write_text("word\tonset\toffset\trun\na\t1\t1.5\t1\nb\t1.5\t2\t1\nc\t0\t2\t2\n")
    result = CliRunner().invoke(main, ["story", "info", str(table)])
    assert result.exit_code == 0, result.output
    assert "words    3 in 2 run(s)" in result.output
    assert "speech   3.0 s, 1.00 words/s" in result.output
    text = tmp_path / "t.txt"
    text.write_text("one two three four")
    result = CliRunner().invoke(main, ["story", "info", str(text), "--words-per-s", "2"])
    assert result.exit_code == 0, result.output
    assert "speech   2.0 s, 2.00 words/s" in result.output


def test_story_info_reports_format_errors(tmp_path):
    table = tmp_path / "bad.tsv"
    table.write_text("word\tonset\toffset\na\t0\t1\nb\t0.5\t1.5\n")
    result = CliRunner().invoke(main, ["story", "info", str(table)])
    assert result.exit_code == 1
    assert f"{table}: line 3: overlapping words" in result.output
    text = tmp_path / "t.txt"
    text.write_text("no rate given")
    result = CliRunner().invoke(main, ["story", "info", str(text)])
    assert result.exit_code == 1
    assert "state a speech rate" in result.output
