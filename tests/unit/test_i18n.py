"""The one catalogue: every marked string has its Polish translation, with the same
placeholders; and the language is chosen as people expect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from telephony.i18n import LOCALE_DIR, Catalogue, negotiate, speaking

ROOT = Path(__file__).parents[2]
METHODS = [
    ("telephony/**.py", "python"),
    ("telephony/**/templates/**.html", "jinja2"),
    ("telephony/**/templates/**.txt", "jinja2"),
]
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def marked_strings() -> set[str]:
    found: set[str] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), METHODS, keywords=KEYWORDS
    ):
        found.update([message] if isinstance(message, str) else [m for m in message if m])
    return found


def polish() -> dict[str, str]:
    with (LOCALE_DIR / "pl" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f, locale="pl")
    return {m.id: m.string for m in catalog if m.id and "fuzzy" not in m.flags}  # type: ignore[misc]


def test_every_marked_string_has_a_polish_translation() -> None:
    marked, translated = marked_strings(), polish()

    missing = sorted(m for m in marked if not translated.get(m))

    assert len(marked) > 20  # the extraction itself found the strings
    assert missing == [], f"add these to the .po (make messages): {missing}"


def test_translations_keep_their_placeholders() -> None:
    wrong = {
        source: target
        for source, target in polish().items()
        if isinstance(source, str)
        and set(PLACEHOLDER.findall(source)) != set(PLACEHOLDER.findall(target))
    }

    assert wrong == {}


def test_a_string_renders_in_the_language_spoken() -> None:
    catalogue = Catalogue.load()

    with speaking("pl"):
        polski = catalogue.gettext("Choose a new password")
    with speaking("en"):
        english = catalogue.gettext("Choose a new password")
    with speaking("xx"):
        unknown = catalogue.gettext("Choose a new password")

    assert polski == "Wybierz nowe hasło"
    assert english == unknown == "Choose a new password"


@pytest.mark.parametrize(
    ("header", "choice", "expected"),
    [
        (None, None, "en"),
        ("pl-PL,pl;q=0.9,en;q=0.8", None, "pl"),
        ("de-DE, en;q=0.5, pl;q=0.7", None, "pl"),
        ("en-GB,pl;q=0.9", None, "en"),
        ("pl;q=0, en;q=0.1", None, "en"),
        ("fr, de", None, "en"),
        ("pl;q=abc, en", None, "en"),
        ("pl", "en", "en"),
        ("en", "pl", "pl"),
        ("en", "xx", "en"),
        ("p" * 5000, None, "en"),
    ],
)
def test_the_language_is_the_persons_choice_else_the_browsers(
    header: str | None, choice: str | None, expected: str
) -> None:
    assert negotiate(header, choice) == expected
