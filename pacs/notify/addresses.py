"""Recipient addresses as the senders accept them: an e-mail address (ASCII, RFC 5321 lengths) or
a phone number in E.164 form for the SMS gateway. Checked where they are entered, so a delivery
never fails on an address a person could have corrected."""

from __future__ import annotations

import re

from pacs.errors import InvalidQuery

# A dot-atom local part and a host name: what SMTP servers take without SMTPUTF8 (RFC 5321 4.1.2).
_EMAIL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def check_email(value: str) -> str:
    """The address, trimmed; :class:`InvalidQuery` with one sentence when it is not one a server takes."""
    value = value.strip()
    local, _, _domain = value.partition("@")
    if len(value) > 254 or len(local) > 64 or not _EMAIL.match(value):
        raise InvalidQuery(f"{value!r} is not an e-mail address (name@host.example, ASCII only)")
    return value


def check_phone(value: str) -> str:
    """A phone number in E.164 form (``+41791234567``); spaces, dots, dashes and brackets are dropped."""
    digits = re.sub(r"[\s.()-]", "", value)
    if not _PHONE.match(digits):
        raise InvalidQuery(f"{value!r} is not a phone number in international form (+41 79 123 45 67)")
    return digits
