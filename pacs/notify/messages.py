"""What a notice says. A message leaves the hospital's systems through mail servers and phones
that are not the hospital's, so it holds the link, the patient's first name at most, the
institution and the link's expiry: never a name beyond the first, a birth date, an exam, a
finding or an identifier of the study (the link's token is the only key in it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class NoticeKind(StrEnum):
    SHARE = "share"  # a share link was made for the recipient
    REPORT = "report"  # a report of the recipient's study was signed


@dataclass(frozen=True, slots=True)
class Notice:
    """One message, ready for any channel: a subject (e-mail only) and a plain-text body."""

    subject: str
    text: str
    link: str

    @property
    def short(self) -> str:
        """The text message form (one SMS segment or two): the subject and the link."""
        return f"{self.subject}: {self.link}"


def first_name(person_name: str) -> str:
    """The first given name of a DICOM Person Name (``Family^Given^Middle^Prefix^Suffix``, PS3.5
    6.2.1; a name without ``^`` is a family name only); "" when there is none."""
    parts = person_name.split("=", 1)[0].split("^")
    return first_word(parts[1]) if len(parts) > 1 else ""


def first_word(full_name: str) -> str:
    """The first word of a name written as people write it ("Anna Maria Berg"), as an account holds it."""
    words = full_name.split()
    return words[0][:64] if words else ""


def _greeting(name: str) -> str:
    return f"Hello {name}," if name else "Hello,"


def _sender(institution: str) -> str:
    return institution.strip() or "Your hospital"


def share_notice(*, link: str, first: str, institution: str, expires_at: datetime, has_pin: bool) -> Notice:
    """The message that carries a new share link."""
    pin = ("\nYou will be asked for the PIN you were given; it is not in this message for your safety.\n"
           if has_pin else "")
    text = (
        f"{_greeting(first)}\n\n"
        f"{_sender(institution)} has shared medical images with you. Open them in your browser:\n\n"
        f"{link}\n\n"
        f"The link works until {expires_at:%d %B %Y}.\n{pin}"
        "Whoever has the link can open the images, so please do not forward this message.\n\n"
        "This message holds no medical results. Questions about the examination go to your doctor.\n"
    )
    return Notice(subject=f"Images shared with you by {_sender(institution)}", text=text, link=link)


def report_notice(*, link: str, first: str, institution: str) -> Notice:
    """The message that tells a patient with an account that a report of theirs is ready."""
    text = (
        f"{_greeting(first)}\n\n"
        f"{_sender(institution)} has a new report for you. Sign in to read it with your images:\n\n"
        f"{link}\n\n"
        "This message holds no medical results. Questions about the report go to your doctor.\n"
    )
    return Notice(subject=f"A report from {_sender(institution)} is ready", text=text, link=link)
