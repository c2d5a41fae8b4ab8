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
    assert f"scan     TR 2 s, {story.n_volumes[0]} + {story.n_volumes[1]} volumes" in lines
    rows = [line.split() for line in lines if line[:3].strip() in ("1", "2")]
    for row, summary in zip(rows, story.run_summary()):
        assert int(row[1]) == summary["n_words"]
        assert float(row[3]) == summary["last_offset_s"]
        assert float(row[5]) == round(summary["words_per_s"], 2)
        assert float(row[6]) == summary["n_volumes"] * 2.0


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
