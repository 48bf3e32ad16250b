"""Which language a request gets: ``?lang=`` (kept in a cookie), else the cookie, else the browser's
``Accept-Language`` (RFC 9110 12.5.4, q-values honoured), else English."""

from __future__ import annotations

from fastapi import Request

from viewer_api.i18n.catalogue import DEFAULT, LANGUAGES, Translator

LANG_COOKIE = "cloudfilm_lang"
LANG_PARAM = "lang"


def supported(tag: str) -> str | None:
    """The catalogue language serving the language tag ``tag`` (any Chinese reads zh-CN), or ``None``."""
    primary = tag.strip().lower().split("-")[0].split("_")[0]
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def from_accept_language(header: str) -> str:
    """The best catalogue language for an ``Accept-Language`` header."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = supported(tag) if tag and tag != "*" else None
        if lang is not None and q > 0:
            ranked.append((-q, position, lang))
    return min(ranked)[2] if ranked else DEFAULT


def requested_language(request: Request) -> str | None:
    """The language named by ``?lang=``, when it is one the catalogue has."""
    value = request.query_params.get(LANG_PARAM)
    return supported(value) if value else None


def choose_language(request: Request) -> str:
    lang = requested_language(request) or supported(request.cookies.get(LANG_COOKIE, "") or "")
    return lang or from_accept_language(request.headers.get("accept-language", ""))


def translator_for(request: Request) -> Translator:
    """The request's translator (chosen once per request)."""
    cached = getattr(request.state, "translator", None)
    if isinstance(cached, Translator):
        return cached
    translator = Translator(choose_language(request))
    request.state.translator = translator
    return translator


__all__ = ["LANGUAGES", "LANG_COOKIE", "choose_language", "from_accept_language", "translator_for"]
