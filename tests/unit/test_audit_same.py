"""The audit's comparison of a recorded state with a stored one."""

from homeiq.replayer.audit import same


def test_a_line_break_stored_as_api_version_1_writes_it_is_the_same_state() -> None:
    assert same("a\nb", "a\\nb")  # influxdb-python writes a line break as `\n`, and influxd keeps the two characters
    assert same("a\nb", "a\nb")
    assert not same("a\nb", "a b")
    assert not same("a\\nb", "a\nb")


def test_numbers_compare_as_numbers() -> None:
    assert same("12.50", "12.5")
    assert not same("on", "1.0")
