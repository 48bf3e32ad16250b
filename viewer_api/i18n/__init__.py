"""The UI's languages: one catalogue (``messages.json``, English and Simplified Chinese) for the
server-rendered pages and the scripts, and the choice of language for a request."""

from viewer_api.i18n.catalogue import CATALOGUE, LANGUAGES, Catalogue, Translator, english
from viewer_api.i18n.negotiate import LANG_COOKIE, choose_language, translator_for

__all__ = ["CATALOGUE", "LANGUAGES", "LANG_COOKIE", "Catalogue", "Translator", "choose_language", "english",
           "translator_for"]
