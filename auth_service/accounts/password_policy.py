"""Password policy after NIST SP 800-63B rev. 4 (2025), §3.1.1.2.

Length is what matters: a minimum (15 for a single-factor password, configurable down to
8 where a second factor is used), at least 64 characters allowed, each Unicode code point
counting as one character after NFKC normalization, and no composition rules. A password
is refused when it is commonly used, repetitive or sequential, a keyboard walk, or contains
the account's email local part.

The commonly-used list is zxcvbn's `passwords` frequency list: 30,000 passwords ranked by
frequency in the Xato corpus of 10 million leaked passwords (zxcvbn, dwolfhub/zxcvbn-python,
`frequency_lists.py`). Its sequence and keyboard-adjacency matchers find the patterns; the
repetition check is ours because zxcvbn's repeat matcher is quadratic in CPU time.
"""

import re
from dataclasses import dataclass

from zxcvbn import matching

from auth_service.errors import PasswordRejected
from auth_service.security.passwords import normalize

MAX_LENGTH = 128
_COMMON = {"passwords": matching.RANKED_DICTIONARIES["passwords"]}
_REPEAT = re.compile(r"(.+?)\1+")
_PATTERN_NAMES = {
    "repeat": "repeats characters",
    "sequence": "is a run of sequential characters",
    "spatial": "is a keyboard pattern",
}
_MIN_LOCAL_PART = 3
_MAX_FREE_CHARACTERS = 2


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int  # exclusive
    kind: str


def _weak_spans(password: str) -> list[_Span]:
    lowered = password.lower()
    spans = [
        _Span(m.start(), m.end(), "repeat")
        for start in range(len(lowered))
        if (m := _REPEAT.match(lowered, start)) and m.end() - m.start() >= 3
    ]
    for match in matching.sequence_match(password):
        spans.append(_Span(match["i"], match["j"] + 1, "sequence"))
    for match in matching.spatial_match(password):
        spans.append(_Span(match["i"], match["j"] + 1, "spatial"))
    for match in matching.dictionary_match(password, _COMMON):
        spans.append(_Span(match["i"], match["j"] + 1, "common"))
    return spans


def _pattern_cover(password: str) -> set[str] | None:
    """The pattern kinds of a cover of `password` by weak pieces, if one exists.

    Pieces are repeats, sequences, keyboard walks and fragments of common passwords, with
    at most `_MAX_FREE_CHARACTERS` characters left over (`qwertyuiop12!`). A cover counts
    only when it uses a real pattern, so a passphrase of ordinary words stays allowed.
    """
    n = len(password)
    by_start: dict[int, list[_Span]] = {}
    for span in _weak_spans(password):
        by_start.setdefault(span.start, []).append(span)
    # best[i][has_pattern] = (characters left over, pattern kinds) for covers of password[:i]
    best: list[dict[bool, tuple[int, frozenset[str]]]] = [{} for _ in range(n + 1)]
    best[0][False] = (0, frozenset())

    def offer(i: int, gaps: int, kinds: frozenset[str]) -> None:
        has_pattern = bool(kinds - {"common"})
        if gaps <= _MAX_FREE_CHARACTERS and gaps < best[i].get(has_pattern, (n + 1,))[0]:
            best[i][has_pattern] = (gaps, kinds)

    for i in range(n):
        for gaps, kinds in list(best[i].values()):
            offer(i + 1, gaps + 1, kinds)
            for span in by_start.get(i, ()):
                offer(span.end, gaps, kinds | {span.kind})
    found = best[n].get(True)
    return set(found[1] - {"common"}) if found else None


def check(password: str, *, min_length: int, email: str | None = None) -> str:
    """Return the normalized password, or raise PasswordRejected naming the failed rule."""
    normalized = normalize(password)
    if len(normalized) < min_length:
        raise PasswordRejected(
            "min_length", f"The password must be at least {min_length} characters long."
        )
    if len(normalized) > MAX_LENGTH:
        raise PasswordRejected(
            "max_length", f"The password must be at most {MAX_LENGTH} characters long."
        )
    lowered = normalized.lower()
    if lowered in _COMMON["passwords"]:
        raise PasswordRejected("common", "The password is too common: it appears in leaks.")
    kinds = _pattern_cover(normalized)
    if kinds:
        described = " and ".join(_PATTERN_NAMES[k] for k in sorted(kinds))
        raise PasswordRejected("pattern", f"The password is too predictable: it {described}.")
    if email:
        local_part = email.split("@", 1)[0].lower()
        if len(local_part) >= _MIN_LOCAL_PART and local_part in lowered:
            raise PasswordRejected("contains_email", "The password must not contain your email.")
    return normalized
