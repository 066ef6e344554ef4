import pytest

from ebpf_otlp.units import parse_count, parse_duration


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("2m", 120), ("1h30m", 5400),
                                          ("500ms", 0.5), ("1.5", 1.5), ("10", 10),
                                          ("50us", 50e-6), ("1µs", 1e-6)])
def test_parses(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "-1s", "abc", "10x", "s", "5s junk", "nan", "inf"])
def test_rejects(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize("text,count", [("0", 0), ("5000", 5000), ("100k", 100_000),
                                        ("1M", 1_000_000), ("2.5k", 2500)])
def test_parses_counts(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["", "-1", "abc", "10x", "k", "1e3"])
def test_rejects_counts(text):
    with pytest.raises(ValueError, match="bad count"):
        parse_count(text)
