"""One message catalogue for pages and mail: English in the code, Polish in
`locale/pl/LC_MESSAGES/messages.po` (the privacy policy's own language).

The `.po` file is the only source: it is compiled in memory when the process
starts, so there is no build step and no compiled file to forget. A string is
marked with `_()` (translated now, in the language of the current request or
message) or `N_()` (marked for extraction, translated where it is shown).
`make messages` extracts and merges; tests/unit/test_i18n.py fails when a
marked string has no Polish translation.

The language is a context variable, set around one page's or one message's
rendering, so one catalogue serves concurrent requests in both languages.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from gettext import NullTranslations
from pathlib import Path

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("en", "pl")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES = {"en": "English", "pl": "Polski"}
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"

_language: ContextVar[str] = ContextVar("language", default=DEFAULT_LANGUAGE)


def N_(message: str) -> str:
    """Mark a string for the catalogue without translating it yet."""
    return message


class Catalogue:
    """Every language's translations, loaded once per process."""

    def __init__(self, translations: dict[str, NullTranslations]) -> None:
        self._translations = translations
        # Babel reads locale data from disk on first use: do it here, off the event loop,
        # and keep the parsed locales, so formatting never touches a file while serving.
        self._locales = {language: Locale.parse(language) for language in LANGUAGES}
        for locale in self._locales.values():
            format_datetime(datetime.now(UTC), "medium", tzinfo=UTC, locale=locale)

    @classmethod
    def load(cls, folder: Path = LOCALE_DIR) -> Catalogue:
        found: dict[str, NullTranslations] = {DEFAULT_LANGUAGE: NullTranslations()}
        for language in LANGUAGES:
            po = folder / language / "LC_MESSAGES" / f"{DOMAIN}.po"
            if language == DEFAULT_LANGUAGE or not po.exists():
                continue
            with po.open("rb") as source:
                catalog = read_po(source, locale=language)
            compiled = io.BytesIO()
            write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
            compiled.seek(0)
            found[language] = Translations(compiled, domain=DOMAIN)
        return cls(found)

    def _current(self) -> NullTranslations:
        return self._translations.get(_language.get(), self._translations[DEFAULT_LANGUAGE])

    def gettext(self, message: str) -> str:
        return self._current().gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._current().ngettext(singular, plural, n)

    def format_time(self, value: datetime | None, language: str | None = None) -> str:
        """A timestamp for people: UTC, in the language's own format."""
        if value is None:
            return ""
        locale = self._locales.get(language or current_language(), self._locales["en"])
        return format_datetime(value.astimezone(UTC), "medium", tzinfo=UTC, locale=locale) + " UTC"


def current_language() -> str:
    return _language.get()


@contextmanager
def speaking(language: str | None) -> Iterator[str]:
    """Render what happens inside in `language` (the default when unknown)."""
    chosen = language if language in LANGUAGES else DEFAULT_LANGUAGE
    token = _language.set(chosen)
    try:
        yield chosen
    finally:
        _language.reset(token)


def negotiate(accept_language: str | None, choice: str | None = None) -> str:
    """The person's own choice, else the best of Accept-Language we speak, else English."""
    if choice in LANGUAGES:
        assert choice is not None
        return choice
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "")[:1000].split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return sorted(ranked)[0][2] if ranked else DEFAULT_LANGUAGE
