"""Email addresses: the form an account keeps, and the key that makes it unique.

Two spellings of one mailbox must never be two accounts: `ａｌｉｃｅ` (fullwidth), `ﬁle`
(a ligature) and `Alice` are `alice`, `file` and `alice`. Every place that takes an address
(registration, admin create, login, search, create-admin, the bootstrap admin) goes through
`parse` and compares `key`s.
"""

import unicodedata
from typing import NamedTuple

import unicodedataplus
from email_validator import EmailNotValidError, validate_email

# RFC 5321 §4.5.3.1.1: a local part is at most 64 octets (of its UTF-8 form, RFC 6531 §3.3).
LOCAL_PART_MAX_OCTETS = 64
# UTS #39 §5.1: Han, kana and Hangul are written together; one Japanese or Korean name is
# one script. Common and Inherited characters (digits, `.`, `-`, marks) go with any script.
_AUGMENTED_SCRIPTS = {
    "Hani": {"Hanb", "Jpan", "Kore"},
    "Hira": {"Jpan"},
    "Kana": {"Jpan"},
    "Hang": {"Kore"},
    "Bopo": {"Hanb"},
}
_ANY_SCRIPT = {"Zyyy", "Zinh"}


class InvalidEmail(ValueError):
    """Not an address this service accepts; the message says why, without the address."""


class Email(NamedTuple):
    # What the account shows and mail goes to: the local part NFKC-normalized with the case
    # it was typed in (RFC 5321 §2.4: only its own server may ignore that case), the domain
    # lower-cased and IDNA-normalized (UTS #46).
    address: str
    # What accounts are unique by: the local part NFKC + case folded, the same domain.
    key: str
    local_part: str


def fold(text: str) -> str:
    """NFKC, then Unicode full case folding, then NFKC again (folding can denormalize)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def parse(text: str) -> Email:
    """The address and its key; InvalidEmail for anything but a bare `local@domain`.

    A display-name form (`Mallory <alice@example.com>`), a quoted local part and a
    bracketed IP are refused: each is a second spelling of someone's mailbox.
    """
    try:
        # NFKC before the syntax check, so that `ａ＠b.example` is judged as `a@b.example`
        # and what is stored is what was checked; surrounding blanks are a paste's.
        parsed = validate_email(
            unicodedata.normalize("NFKC", text).strip(),
            check_deliverability=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    local = parsed.local_part
    if len(local.encode()) > LOCAL_PART_MAX_OCTETS:
        raise InvalidEmail(
            f"The part before the @-sign is longer than {LOCAL_PART_MAX_OCTETS} octets."
        )
    return Email(address=parsed.normalized, key=f"{fold(local)}@{parsed.domain}", local_part=local)


def key_of(text: str) -> str | None:
    """The key of an address, or None when `text` is not one (it then matches no account)."""
    try:
        return parse(text).key
    except InvalidEmail:
        return None


def _scripts(char: str) -> set[str]:
    scripts = set(unicodedataplus.script_extensions(char))
    for script in list(scripts):
        scripts |= _AUGMENTED_SCRIPTS.get(script, set())
    return scripts


def is_single_script(text: str) -> bool:
    """Whether every letter of `text` belongs to one script (UTS #39 §5.1 resolved set)."""
    resolved: set[str] | None = None
    for char in text:
        scripts = _scripts(char)
        if scripts & _ANY_SCRIPT:
            continue
        resolved = scripts if resolved is None else resolved & scripts
        if not resolved:
            return False
    return True


def check_new_address(email: Email, *, allow_unicode: bool) -> None:
    """Refuse a local part a new account may not have (InvalidEmail).

    By default only ASCII (after NFKC): a Cyrillic `а` in `аlice` then cannot pass for a
    Latin `a`. With Unicode allowed, a local part must still be written in one script.
    """
    if email.local_part.isascii():
        return
    if not allow_unicode:
        raise InvalidEmail("The part before the @-sign must be ASCII.")
    if not is_single_script(email.local_part):
        raise InvalidEmail("The part before the @-sign mixes letters of different scripts.")
