"""Attribute matching per PS3.4 C.2.2.2, compiled to SQL conditions on index columns.

Single value, universal (empty), wildcard (``*``, ``?``), range (DA/TM/DT ``a-``, ``-b``, ``a-b``),
list of UIDs and multiple values (``MR\\CT``). Person names match case- and accent-insensitively
on the normalised column, on any component group (alphabetic, ideographic, phonetic). Dates,
times and date-times must be real ones in the PS3.5 Table 6.2-1 forms (``20261340`` is refused,
as is ``250000``), each bound of a range too.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from sqlalchemy import and_, or_

from pacs.errors import InvalidQuery
from pacs.names import normalize_pn
from pacs.uids import is_valid_uid

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DATETIME = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_INT_VRS = {"IS", "US", "UL", "SS", "SL", "SV", "UV"}


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _glob_pattern(value: str) -> str:
    return "".join("[" + c + "]" if c in "[]" else c for c in value)


def _prefix_range(column: Any, prefix: str) -> Any:
    """``prefix <= column < prefix+1``: lets a plain B-tree index narrow a prefix match."""
    if not prefix:
        return None
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


def string_condition(column: Any, value: str, dialect: str, *, case_sensitive: bool = True) -> Any:
    """One single value (no backslash) against a text column."""
    if value == "*" or value == "":
        return None
    if not has_wildcard(value):
        return column == value
    prefix = re.split(r"[*?]", value, maxsplit=1)[0]
    if case_sensitive and dialect == "sqlite":
        match = column.op("GLOB")(_glob_pattern(value))
    else:
        match = column.like(_like_pattern(value), escape="\\")
    narrow = _prefix_range(column, prefix) if case_sensitive or dialect != "sqlite" else None
    return and_(narrow, match) if narrow is not None else match


def pn_condition(norm_column: Any, value: str, dialect: str) -> Any:
    """Person name: folded, matched against the component groups (PS3.5 6.2.1).

    An ASCII pattern matches the alphabetic group (an index range scan); a pattern with other
    scripts (``山田*``) may match the ideographic or phonetic group too.
    """
    pattern = normalize_pn(value)
    if "=" in pattern:
        pattern = next((g for g in pattern.split("=") if g), "")
    if pattern in ("", "*"):
        return None
    like = _like_pattern(pattern)
    first_group = or_(norm_column.like(like, escape="\\"), norm_column.like(like + "=%", escape="\\"))
    narrow = _prefix_range(norm_column, re.split(r"[*?]", pattern, maxsplit=1)[0])
    alphabetic = and_(narrow, first_group) if narrow is not None else first_group
    if pattern.isascii():
        return alphabetic
    return or_(
        alphabetic,
        norm_column.like("%=" + like, escape="\\"),
        norm_column.like("%=" + like + "=%", escape="\\"),
    )


def fuzzy_pn_condition(norm_column: Any, value: str) -> Any:
    """QIDO ``fuzzymatching=true``: every query word is the prefix of some word of the name."""
    words = [w for w in re.split(r"[\s=]+", normalize_pn(value).replace("*", "").replace("?", "")) if w]
    if not words:
        return None
    conds = []
    for word in words:
        like = _like_pattern(word)
        conds.append(or_(norm_column.like(like + "%", escape="\\"), norm_column.like("% " + like + "%", escape="\\"),
                         norm_column.like("%=" + like + "%", escape="\\")))
    return and_(*conds)


def _real_date(text: str) -> bool:
    """``YYYY``, ``YYYYMM`` or ``YYYYMMDD`` of the calendar (digits already checked)."""
    try:
        date(int(text[:4]), int(text[4:6] or 1), int(text[6:8] or 1))
    except ValueError:
        return False
    return True


def _real_time(text: str) -> bool:
    """``HH[MM[SS[.F]]]`` with HH < 24, MM < 60 and SS <= 60 (a leap second, PS3.5 Table 6.2-1)."""
    return int(text[:2]) < 24 and int(text[2:4] or 0) < 60 and int(text[4:6] or 0) <= 60


def _real_datetime(text: str) -> bool:
    """``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``: a real date, time and a UTC offset of -1200 to +1400."""
    body, offset = text, ""
    if len(text) > 5 and text[-5] in "+-":
        body, offset = text[:-5], text[-5:]
    if offset:
        minutes = (int(offset[1:3]) * 60 + int(offset[3:])) * (-1 if offset[0] == "-" else 1)
        if int(offset[3:]) >= 60 or not -12 * 60 <= minutes <= 14 * 60:
            return False
    return _real_date(body[:8]) and (len(body) <= 8 or _real_time(body[8:]))


_REAL = {"DA": _real_date, "TM": _real_time, "DT": _real_datetime}


def _check(value: str, regex: re.Pattern[str], what: str, keyword: str, vr: str) -> str:
    if not regex.match(value) or not _REAL[vr](value):
        raise InvalidQuery(f"{keyword} value {value[:64]!r} is not a valid {what}")
    return value


def range_condition(column: Any, value: str, vr: str, keyword: str) -> Any:
    """DA / TM / DT: single value or range; dates may use the old ``YYYY.MM.DD`` form."""
    regex, what = {"DA": (_DATE, "date (YYYYMMDD)"), "TM": (_TIME, "time (HHMMSS.FFFFFF)"),
                   "DT": (_DATETIME, "date-time")}[vr]
    text = value.replace(".", "") if vr == "DA" else value
    if text.count("-") == 1 and vr != "DT" or (vr == "DT" and re.fullmatch(r"[^-]*-[^-]*", text)):
        low, high = (p.strip() for p in text.split("-"))
        if not low and not high:
            raise InvalidQuery(f"{keyword} range {value!r} has no bounds")
        conds = []
        if low:
            conds.append(column >= _check(low, regex, what, keyword, vr))
        if high:
            _check(high, regex, what, keyword, vr)
            # A time/date-time upper bound covers everything it is a prefix of: 1030 includes 103059.
            conds.append(column <= high if vr == "DA" else column < _succ(high))
        return and_(*conds, column != "")
    if has_wildcard(text):
        return string_condition(column, text, "postgresql")
    _check(text, regex, what, keyword, vr)
    return column == text if vr == "DA" else column.like(_like_pattern(text) + "%", escape="\\")


def _succ(text: str) -> str:
    return text[:-1] + chr(ord(text[-1]) + 1)


def uid_condition(column: Any, value: str, keyword: str) -> Any:
    uids = [u.strip() for u in value.split("\\") if u.strip()]
    if not uids:
        return None
    for uid in uids:
        if not is_valid_uid(uid):
            raise InvalidQuery(f"{keyword} value {uid[:80]!r} is not a valid UID")
    return column == uids[0] if len(uids) == 1 else column.in_(uids)


def int_condition(column: Any, value: str, keyword: str) -> Any:
    values = []
    for part in value.split("\\"):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError as exc:
            raise InvalidQuery(f"{keyword} value {part!r} is not an integer") from exc
    if not values:
        return None
    return column == values[0] if len(values) == 1 else column.in_(values)


def value_condition(column: Any, norm_column: Any | None, vr: str, value: str, keyword: str, dialect: str,
                    fuzzy: bool = False) -> Any:
    """The condition for one attribute's query value, or None for universal matching."""
    value = value.strip(" \x00") if vr != "PN" else value.strip("\x00")
    if value == "" or value == "*":
        return None
    if vr == "UI":
        return uid_condition(column, value, keyword)
    if vr in _INT_VRS:
        return int_condition(column, value, keyword)
    if vr in ("DA", "TM", "DT"):
        parts = [p for p in value.split("\\") if p]
        return or_(*[range_condition(column, p, vr, keyword) for p in parts]) if len(parts) > 1 \
            else range_condition(column, parts[0], vr, keyword)
    if vr == "PN" and norm_column is not None:
        if fuzzy:
            return fuzzy_pn_condition(norm_column, value)
        return pn_condition(norm_column, value, dialect)
    parts = value.split("\\")
    conds = [c for c in (string_condition(column, p.strip(), dialect) for p in parts) if c is not None]
    if len(conds) != len(parts):
        return None  # one alternative is universal
    return conds[0] if len(conds) == 1 else or_(*conds)
