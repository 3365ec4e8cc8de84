"""Names and string values of the `ha` schema written as the integration's client for the user's `api_version`
writes them, so influxd stores what it stored for Home Assistant; where that client's line would lose something,
a form influxd keeps.

The clients differ (read in influxdb-python 5.3.1 `line_protocol.py` and influxdb-client 1.24 and 1.40
`client/write/point.py`, the versions HA 2024.3.3 and 2025.4.4 pin):

- api_version 1 (influxdb-python) doubles every backslash in a measurement, tag key, tag value and field key, and
  writes a line break as `\\n`; in a string value it escapes backslashes and quotes and writes a line break as `\\n`.
  influxd 1.x undoes none of that in names (a `\\` stays two backslashes, a line break is stored as the two
  characters `\\n`) and in string values stores the line break as `\\n`.
- api_version 2 (influxdb-client) leaves backslashes alone in names and writes a line break, tab or carriage return
  as `\\n`, `\\t`, `\\r` (stored so); string values are stored exactly.

What each client's line loses, measured against influxd 1.6 (tests/realha/test_differential.py,
tests/test_ha_schema_stored_or_refused.py): a measurement that starts with `#` (the line is a comment), with NULs
(influxd skips them: `\\x00a` is stored as `a`, `\\x00#` is a comment) or with v1 a tab; a field key starting
with a NUL (or with v1 a tab), skipped the same way when it comes first; a name ending in a backslash (the point or
some of its fields vanish, or the line is refused); in a measurement (and with api_version 2 in a field key, after
an odd run of backslashes) a backslash before a space, comma, `=` or `"` (stored under another name, or refused).
Such a name is stored as its JSON literal instead, every backslash and quote inside written `\\u005c`, `\\u0022`
(`json.loads` gives the name back). So is a quote-wrapped name that reads as the literal of such a name (raw control
characters and all), so decoding is unique.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Final

_V2_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_V2_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_V1_NAME: Final = str.maketrans({"\\": "\\\\", " ": "\\ ", ",": "\\,", "=": "\\=", "\n": "\\n"})
_V1_STRING: Final = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_V2_STRING: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})
_BACKSLASH_BEFORE_SEPARATOR: Final = re.compile(r'\\(?:[ ,="]|\Z)')
_ODD_BACKSLASHES_BEFORE_SEPARATOR: Final = re.compile(r'(?<!\\)(?:\\\\)*\\(?:[ ,="]|\Z)')


def _trailing_backslash(name: str) -> bool:
    return name[-1:] == "\\"


def _lost_measurement_v1(name: str) -> bool:
    # influxd skips NULs and tabs at the start of a line (v2 writes a tab as `\t`).
    return name[:1] in ("", "#", "\x00", "\t") or _BACKSLASH_BEFORE_SEPARATOR.search(name) is not None


def _lost_measurement_v2(name: str) -> bool:
    return name[:1] in ("", "#", "\x00") or _BACKSLASH_BEFORE_SEPARATOR.search(name) is not None


def _lost_field_key_v1(name: str) -> bool:
    # A field key first after the space is read past leading NULs and tabs, as a line's start is.
    return name[:1] in ("\t", "\x00") or _trailing_backslash(name)


def _lost_field_key_v2(name: str) -> bool:
    return name[:1] == "\x00" or _ODD_BACKSLASHES_BEFORE_SEPARATOR.search(name) is not None


def _as_literal(name: str) -> str:
    """`name` as its JSON literal with no backslash or quote inside but those of its `\\uXXXX` escapes."""
    literal = json.dumps(name, ensure_ascii=False)
    return '"' + literal[1:-1].replace("\\\\", "\\u005c").replace('\\"', "\\u0022") + '"'


def _needs_literal(name: str, lost: Callable[[str], bool]) -> bool:
    """Whether `name` is stored as its literal: the client's line would lose it (`lost` is the position's test), or
    it reads as the literal of such a name (so decoding is unique); raw control characters read too."""
    if lost(name):
        return True
    if len(name) > 2 and name[0] == '"' == name[-1]:
        try:
            inner = json.loads(name, strict=False)
        except ValueError:
            return False
        return isinstance(inner, str) and inner != "" and _needs_literal(inner, lost)
    return False


def _kept(name: str, lost: Callable[[str], bool]) -> str:
    """`name`, or its literal where it needs one."""
    return _as_literal(name) if _needs_literal(name, lost) else name


class HaNames:
    """How names and string values go in a line for one `api_version` ("1" or "2")."""

    def __init__(self, api_version: str) -> None:
        self.v1 = api_version != "2"
        if self.v1:
            self._lost_measurement, self._lost_field_key = _lost_measurement_v1, _lost_field_key_v1
        else:
            self._lost_measurement, self._lost_field_key = _lost_measurement_v2, _lost_field_key_v2

    def measurement(self, name: str) -> str:
        name = _kept(name, self._lost_measurement)
        return name.translate(_V1_NAME) if self.v1 else name.translate(_V2_MEASUREMENT)

    def field_key(self, name: str) -> str:
        name = _kept(name, self._lost_field_key)
        return name.translate(_V1_NAME) if self.v1 else name.translate(_V2_KEY)

    def tag(self, text: str) -> str:
        """A tag key or value."""
        text = _kept(text, _trailing_backslash)
        return text.translate(_V1_NAME) if self.v1 else text.translate(_V2_KEY)

    def string(self, value: str) -> str:
        """A string field value, quoted."""
        return '"' + value.translate(_V1_STRING if self.v1 else _V2_STRING) + '"'
