"""presidio's predefined pattern recognizers, without presidio.

``import presidio_analyzer`` imports spaCy (~70 MB resident) even when no NER
runs.  The pattern-mode engine needs only each recognizer's data (patterns,
scores, flags, context words) and its validators, so those are kept here:
the regular expressions, context lists and checks of presidio-analyzer
2.2.366 (MIT licence, Copyright (c) Microsoft Corporation), copied as they
are.  presidio itself is imported only for NER (``ingress.hooks.pii.ner``).
tests/hooks/test_predefined.py checks every value and verdict against
presidio's own classes, so an upgrade that changes them shows up there.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Sequence
from dataclasses import dataclass

import regex

from ingress.hooks.pii.iban_patterns import regex_per_country
from ingress.hooks.pii.suffixes import has_fqdn

MIN_SCORE = 0.0
MAX_SCORE = 1.0
# presidio's PatternRecognizer default
DEFAULT_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    regex: str
    score: float


class EntityRecognizer:
    MIN_SCORE = MIN_SCORE
    MAX_SCORE = MAX_SCORE

    def __init__(self, supported_entity: str, name: str, context: Sequence[str] | None = None) -> None:
        self.supported_entities = [supported_entity]
        self.name = name
        self.context: list[str] = list(context or [])


class PatternRecognizer(EntityRecognizer):
    """Patterns and verdicts: ``validate_result`` True -> score 1.0, False ->
    dropped, None -> pattern score; ``invalidate_result`` True -> dropped."""

    def __init__(
        self,
        supported_entity: str,
        name: str,
        patterns: Sequence[Pattern],
        context: Sequence[str] | None = None,
        global_regex_flags: int = DEFAULT_FLAGS,
    ) -> None:
        super().__init__(supported_entity, name, context)
        self.patterns = list(patterns)
        self.global_regex_flags = global_regex_flags

    # Whether ``validate_result`` can answer True (a checksum that lifts a
    # weak pattern to 1.0) or only drops matches: a stream guard holds a weak
    # pattern's possible matches only when its score can reach a threshold.
    CONFIRMS = True

    def validate_result(self, pattern_text: str) -> bool | None:
        return None

    def invalidate_result(self, pattern_text: str) -> bool | None:
        return None


def _sanitize(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    for search, replacement in pairs:
        text = text.replace(search, replacement)
    return text


def luhn(digits: str) -> bool:
    """presidio's credit-card checksum over a string of digits."""
    values = [int(d) for d in digits]
    checksum = sum(values[-1::-2])
    for d in values[-2::-2]:
        checksum += sum(int(x) for x in str(d * 2))
    return checksum % 10 == 0


class CreditCardRecognizer(PatternRecognizer):
    PATTERNS = [
        Pattern(
            "All Credit Cards (weak)",
            r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))[- ]?(\d{3,4})[- ]?"
            r"(\d{3,4})[- ]?(\d{3,5})\b",
            0.3,
        ),
    ]
    CONTEXT = [
        "credit",
        "card",
        "visa",
        "mastercard",
        "cc ",
        "amex",
        "discover",
        "jcb",
        "diners",
        "maestro",
        "instapayment",
    ]

    def __init__(self) -> None:
        self.replacement_pairs = [("-", ""), (" ", "")]
        super().__init__("CREDIT_CARD", "CreditCardRecognizer", self.PATTERNS, self.CONTEXT)

    def validate_result(self, pattern_text: str) -> bool | None:
        # presidio raises on a non-digit left after sanitising; its pattern
        # never lets one through, a custom pattern's Luhn check strips them.
        return luhn(_sanitize(pattern_text, self.replacement_pairs))


class IbanRecognizer(PatternRecognizer):
    PATTERNS = [
        Pattern(
            "IBAN Generic",
            r"(?<![A-Z0-9])([A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]{4}){2,6})"
            r"((?:[ -]?[A-Z0-9]{4})?)((?:[ -]?[A-Z0-9]{1,3})?)(?![A-Z0-9])",
            0.5,
        ),
    ]
    CONTEXT = ["iban", "bank", "transaction"]
    LETTERS: dict[int, str] = {ord(d): str(i) for i, d in enumerate(string.digits + string.ascii_uppercase)}
    _FLAGS = regex.DOTALL | regex.MULTILINE

    def __init__(self) -> None:
        self.replacement_pairs = [("-", ""), (" ", "")]
        super().__init__(
            "IBAN_CODE", "IbanRecognizer", self.PATTERNS, self.CONTEXT, global_regex_flags=self._FLAGS
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        try:
            text = _sanitize(pattern_text, self.replacement_pairs)
            if self._check_digits(text) != text[2:4]:
                return False
            if self._valid_format(text):
                return True
            if self._valid_format(text.upper()):
                return None
            return False
        except ValueError:
            return False

    @classmethod
    def _check_digits(cls, iban: str) -> str:
        transformed = (iban[:2] + "00" + iban[4:]).upper()
        number = (transformed[4:] + transformed[:4]).translate(cls.LETTERS)
        return f"{98 - (int(number) % 97):0>2}"

    @classmethod
    def _valid_format(cls, iban: str) -> bool:
        # presidio's exact_match=False: the country's format, unanchored at the end
        country_regex = regex_per_country.get(iban[:2], "")
        return bool(country_regex) and regex.match(country_regex, iban, flags=cls._FLAGS) is not None


class UsSsnRecognizer(PatternRecognizer):
    PATTERNS = [
        Pattern("SSN1 (very weak)", r"\b([0-9]{5})-([0-9]{4})\b", 0.05),
        Pattern("SSN2 (very weak)", r"\b([0-9]{3})-([0-9]{6})\b", 0.05),
        Pattern("SSN3 (very weak)", r"\b(([0-9]{3})-([0-9]{2})-([0-9]{4}))\b", 0.05),
        Pattern("SSN4 (very weak)", r"\b[0-9]{9}\b", 0.05),
        Pattern("SSN5 (medium)", r"\b([0-9]{3})[- .]([0-9]{2})[- .]([0-9]{4})\b", 0.5),
    ]
    CONTEXT = ["social", "security", "ssn", "ssns", "ssid"]

    def __init__(self) -> None:
        super().__init__("US_SSN", "UsSsnRecognizer", self.PATTERNS, self.CONTEXT)

    def invalidate_result(self, pattern_text: str) -> bool | None:
        delimiters = {c for c in pattern_text if c in (".", "-", " ")}
        if len(delimiters) > 1:  # mismatched delimiters
            return True
        only_digits = "".join(c for c in pattern_text if c.isdigit())
        if all(only_digits[0] == c for c in only_digits):  # all the same digit
            return True
        if only_digits[3:5] == "00" or only_digits[5:] == "0000":  # a group of zeros
            return True
        if only_digits[:3] in ("000", "666"):  # area numbers never issued
            return True
        # canonical sample/placeholder SSNs published for examples
        return only_digits in ("123456789", "987654320", "078051120")


class EmailRecognizer(PatternRecognizer):
    PATTERNS = [
        Pattern(
            "Email (Medium)",
            r"\b((([!#$%&'*+\-/=?^_`{|}~\w])|([!#$%&'*+\-/=?^_`{|}~\w][!#$%&'*+\-/=?^_`{|}~\.\w]{0,}"
            r"[!#$%&'*+\-/=?^_`{|}~\w]))[@]\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+)\b",
            0.5,
        ),
    ]
    CONTEXT = ["email"]

    def __init__(self) -> None:
        super().__init__("EMAIL_ADDRESS", "EmailRecognizer", self.PATTERNS, self.CONTEXT)

    def validate_result(self, pattern_text: str) -> bool | None:
        # presidio: ``tldextract.extract(pattern_text).fqdn != ""``
        return has_fqdn(pattern_text)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_H = r"[0-9A-Fa-f]{1,4}"
_PREFIX6 = r"(?:/(?:12[0-8]|1[01]\d|[1-9]?\d))?"


class IpRecognizer(PatternRecognizer):
    PATTERNS = [
        Pattern(
            "IPv4_mapped",
            rf"(?<![\w:])::(?:ffff(?::0{{1,4}})?:)?(?:{_OCTET}\.){{3}}{_OCTET}{_PREFIX6}\b",
            0.6,
        ),
        Pattern(
            "IPv4_embedded",
            rf"(?<![\w:])(?:(?:{_H}:){{1,5}}:(?:{_H}:){{0,4}}|(?:{_H}:){{6}})"
            rf"(?:{_OCTET}\.){{3}}{_OCTET}{_PREFIX6}\b",
            0.6,
        ),
        Pattern(
            "IPv4",
            rf"\b{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(?:[0-2]?\d|3[0-2]))?\b",
            0.6,
        ),
        Pattern(
            "IPv6",
            rf"(?<![\w:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|:(?::{_H}){{1,7}}|(?:{_H}:){{1,6}}:{_H}"
            rf"|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}"
            rf"|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
            rf"|{_H}:(?::{_H}){{1,6}}|:(?::{_H}){{1,6}})(?:%[0-9a-zA-Z]+)?{_PREFIX6}(?![\w:]|\.\d)",
            0.6,
        ),
        Pattern("IPv6_unspecified", rf"(?<![\w:])::{_PREFIX6}(?![\w:])", 0.1),
    ]
    CONTEXT = ["ip", "ipv4", "ipv6"]

    def __init__(self) -> None:
        super().__init__("IP_ADDRESS", "IpRecognizer", self.PATTERNS, self.CONTEXT)

    def invalidate_result(self, pattern_text: str) -> bool | None:
        try:
            ipaddress.ip_interface(pattern_text)
        except ValueError:
            return True
        return None


# The top-level domains presidio's URL pattern knows (CommonRegex, MIT
# licence, Copyright (c) 2014 Madison May), in presidio's order.
_TLD_TEXT = """
com edu gov int mil net onl org pro red tel uno xxx academy accountant accountants actor adult
africa agency airforce apartments app archi army art asia associates attorney auction audio auto
autos baby band bar bargains beer berlin best bet bid bike bio black blackfriday blog blue boats
bond boo boston bot boutique build builders business buzz cab cafe cam camera camp capital car
cards care careers cars casa cash casino catering center ceo cfd charity chat cheap christmas
church city claims cleaning click clinic clothing cloud club codes coffee college com community
company computer condos construction consulting contact contractors cooking cool coupons courses
credit creditcard cricket cruises cyou dad dance date dating day degree delivery democrat dental
dentist desi design dev diamonds diet digital direct directory discount doctor dog domains
download earth eco education email energy engineer engineering enterprises equipment esq estate
events exchange expert exposed express fail faith family fans farm fashion feedback film finance
financial fish fishing fit fitness flights florist flowers football forsale foundation fun fund
furniture futbol fyi gallery game games garden gay gdn gifts gives giving glass global gmbh gold
golf graphics gratis green gripe group guide guitars guru hair hamburg haus health healthcare
help hiphop hockey holdings holiday homes horse hospital host hosting house how icu info ink
institute insure international investments irish jewelry jetzt juegos kaufen kids kitchen kiwi
krd kyoto land lat law lawyer lease legal lgbt life lighting limited limo link live loan loans
lol london love ltd ltda luxury maison management market marketing markets mba media melbourne
meme memorial men miami mobi moda moe mom money monster mortgage motorcycles mov movie nagoya
name navy network new news ngo ninja now nyc observer okinawa one ong onl online organic osaka
page paris partners parts party pet phd photo photography photos pics pictures pink pizza place
plumbing plus poker porn press pro productions prof promo properties property protection pub
quest racing recipes red rehab reise reisen rent rentals repair report republican rest
restaurant review reviews rip rocks rodeo rsvp run saarland sale salon sarl sbs school schule
science services sex sexy sh shoes shop shopping show singles site skin soccer social software
solar solutions soy space spiegel study style sucks supply support surf surgery systems tax taxi
team tech technology tel theater tips tires today tools top tours town toys trade training tube
uk university uno vacations ventures vet video villas vin vip vision vlaanderen vodka vote
voting voyage wales wang watch webcam website wedding wiki wine work works world wtf xyz yoga
yokohama you zone ac ad ae af ag ai al am an ao aq ar as at au aw ax az ba bb bd be bf bg bh bi
bj bm bn bo br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj
dk dm do dz ec ee eg er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq gr gs
gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr
kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt mu mv
mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa
re ro rs ru rw sa sb sc sd se sg sh si sj sk sl sm sn so sr st su sv sx sy sz tc td tf tg th tj
tk tl tm tn to tp tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw
"""
_TLDS = _TLD_TEXT.split()
BASE_URL_REGEX = (
    r"((www\d{0,3}[.])?[a-z0-9.\-]{1,253}[.](?:"
    + "|".join(f"(?:{t})" for t in _TLDS)
    + r")(?:/[^\s()<>\"']*)?)"
)

# presidio's quote class, as it writes it: ["\'] (a redundant backslash)
_QUOTE = "[\"\\']"
_QUOTE_I = "(?i)" + _QUOTE


class UrlRecognizer(PatternRecognizer):
    PATTERNS = [
        Pattern("Standard Url", "(?i)(?:https?://)" + BASE_URL_REGEX, 0.6),
        Pattern("Non schema URL", "(?i)" + BASE_URL_REGEX, 0.5),
        Pattern("Quoted URL", _QUOTE_I + "(https?://" + BASE_URL_REGEX + ")" + _QUOTE, 0.6),
        Pattern("Quoted Non-schema URL", _QUOTE_I + "(" + BASE_URL_REGEX + ")" + _QUOTE, 0.5),
    ]
    CONTEXT = ["url", "website", "link"]

    def __init__(self) -> None:
        super().__init__("URL", "UrlRecognizer", self.PATTERNS, self.CONTEXT)


@dataclass(frozen=True, slots=True)
class PhoneMatch:
    entity_type: str
    start: int
    end: int
    score: float


class PhoneRecognizer(EntityRecognizer):
    """Phone numbers of presidio's default regions via python-phonenumbers
    (imported on first use: its metadata loads per region)."""

    SCORE = 0.4
    CONTEXT = ["phone", "number", "telephone", "cell", "cellphone", "mobile", "call"]
    DEFAULT_SUPPORTED_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")

    def __init__(self) -> None:
        super().__init__("PHONE_NUMBER", "PhoneRecognizer", self.CONTEXT)
        self.supported_regions = self.DEFAULT_SUPPORTED_REGIONS
        self.leniency = 1

    def analyze(
        self, text: str, entities: Sequence[str] = (), nlp_artifacts: object = None
    ) -> list[PhoneMatch]:
        import phonenumbers

        results: set[PhoneMatch] = set()
        for region in self.supported_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=self.leniency):
                results.add(PhoneMatch(self.supported_entities[0], match.start, match.end, self.SCORE))
        return remove_duplicates(list(results))


def remove_duplicates(results: list[PhoneMatch]) -> list[PhoneMatch]:
    """presidio's ``EntityRecognizer.remove_duplicates``: drop zero scores and
    results another of the same type contains with an equal or higher score;
    score first, then position."""
    ordered = sorted(results, key=lambda r: (r.entity_type, r.start, -(r.end - r.start), -r.score))
    kept: list[PhoneMatch] = []
    active: dict[str, list[PhoneMatch]] = {}
    for r in ordered:
        if r.score == 0:
            continue
        group = [k for k in active.get(r.entity_type, []) if k.end >= r.start]
        if any(r.start >= k.start and r.end <= k.end and r.score <= k.score for k in group):
            active[r.entity_type] = group
            continue
        kept.append(r)
        group.append(r)
        active[r.entity_type] = group
    return sorted(kept, key=lambda r: (-r.score, r.start, -(r.end - r.start)))
