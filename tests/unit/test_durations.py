import pytest

from ebpf_otlp.durations import parse_duration


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("2m", 120), ("1h30m", 5400),
                                          ("500ms", 0.5), ("1.5", 1.5), ("10", 10)])
def test_parses(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "-1s", "abc", "10x", "s", "5s junk", "nan", "inf"])
def test_rejects(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)
