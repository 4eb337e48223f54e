"""Voice of the customer: NPS, CSAT, CES, an emotion score per stage and comment themes.

Survey answers (``ws.surveys()``: ``person_id``, ``account_id``, ``ts``, ``kind``,
``score``, ``comment``, ``touchpoint``, ``stage``) are aggregated once on the backend
(sufficient statistics per group and kind); confidence intervals and the text analysis
of comments are computed in Python from what the backend returns. ``docs/surveys.md``
has the long form with the verification against the demo's planted truth.

Scales and formulas (the canonical implementation; other analyses reuse them):

* **NPS** (``nps``, 0–10): promoters score 9–10, passives 7–8, detractors 0–6.
  ``NPS = 100 × (P − D) / n``. Its standard error is that of the difference of two
  trinomial shares, ``100 × sqrt((p + d − (p − d)²) / n)`` with ``p = P/n``, ``d = D/n``;
  the interval is ``NPS ± z × se``, clipped to [−100, 100].
* **CSAT** (``csat``, 1–5): share of answers scoring 4 or 5, with the Wilson score interval.
* **CES** (``ces``, 1–7, higher = easier): mean score with the Student-t interval
  ``mean ± t(n−1) × sd / sqrt(n)`` (``sd`` the sample standard deviation).
* **Emotion** (any kind): each answer's score mapped to 0–1 on its scale,
  ``(score − lo) / (hi − lo)``, averaged over the answers of a stage (all kinds
  together), with the Student-t interval of that mean. Shown as a face
  (:func:`face`). Answers whose kind is unknown or whose score lies outside its
  scale are left out and counted in ``SurveyResult.ignored``.

Comments are classified by a documented German + English lexicon (:data:`THEME_LEXICON`,
:data:`POSITIVE`, :data:`NEGATIVE`, :data:`NEGATORS`): see :func:`analyze_comment`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from scipy import stats as _st

from journeylens.analyses._relations import segment_values
from journeylens.analyses._time import PERIODS
from journeylens.errors import InvalidParameterError, UnknownNameError
from journeylens.journey import JourneyModel

# ============================================================================ scales & formulas
SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
"""Survey kind -> (lowest, highest) score."""
PROMOTER_MIN = 9
"""NPS promoters score 9 or 10."""
DETRACTOR_MAX = 6
"""NPS detractors score 0 to 6 (passives 7 and 8)."""
CSAT_SATISFIED_MIN = 4
"""CSAT counts answers of 4 or 5 (of 1–5) as satisfied."""
NONE_LABEL = "(none)"
"""Group value of answers without a value for the breakdown (no stage, not in a segment, ...)."""
ALL_LABEL = "all"
MIN_CONFIDENCE, MAX_CONFIDENCE = 0.5, 0.999


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval; ``value``/bounds are None when ``n`` is 0 (or
    the interval needs 2 answers)."""

    value: float | None
    lower: float | None
    upper: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "lower": self.lower, "upper": self.upper, "n": self.n}


@dataclass(frozen=True)
class NpsStat(Estimate):
    """NPS in points (−100..100) with the promoter/passive/detractor counts."""

    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "promoters": self.promoters, "passives": self.passives,
                "detractors": self.detractors}


@dataclass(frozen=True)
class CsatStat(Estimate):
    """CSAT as the share (0..1) of satisfied answers (4–5), Wilson interval; ``mean`` score."""

    satisfied: int = 0
    mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "satisfied": self.satisfied, "mean": self.mean}


@dataclass(frozen=True)
class MeanStat(Estimate):
    """A mean score with its Student-t interval and the sample standard deviation."""

    sd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "sd": self.sd}


def nps_from_counts(promoters: int, passives: int, detractors: int, *, confidence: float = 0.95) -> NpsStat:
    """NPS = 100 × (promoters − detractors) / n with the trinomial normal interval (module doc)."""
    n = promoters + passives + detractors
    if n == 0:
        return NpsStat(None, None, None, 0)
    p, d = promoters / n, detractors / n
    value = 100 * (p - d)
    se = 100 * math.sqrt(max(p + d - (p - d) ** 2, 0.0) / n)
    h = _z(confidence) * se
    return NpsStat(value, max(-100.0, value - h), min(100.0, value + h), n, promoters, passives, detractors)


def nps(scores: Sequence[float], *, confidence: float = 0.95) -> NpsStat:
    """NPS of raw 0–10 scores."""
    p = sum(1 for s in scores if s >= PROMOTER_MIN)
    d = sum(1 for s in scores if s <= DETRACTOR_MAX)
    return nps_from_counts(p, len(scores) - p - d, d, confidence=confidence)


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial share; None when ``n`` is 0."""
    if n == 0:
        return None
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def csat_from_counts(satisfied: int, n: int, *, mean: float | None = None, confidence: float = 0.95) -> CsatStat:
    """CSAT share ``satisfied / n`` with the Wilson interval."""
    ci = wilson_interval(satisfied, n, confidence=confidence)
    if ci is None:
        return CsatStat(None, None, None, 0)
    return CsatStat(satisfied / n, ci[0], ci[1], n, satisfied, mean)


def csat(scores: Sequence[float], *, confidence: float = 0.95) -> CsatStat:
    """CSAT of raw 1–5 scores."""
    n = len(scores)
    sat = sum(1 for s in scores if s >= CSAT_SATISFIED_MIN)
    return csat_from_counts(sat, n, mean=sum(scores) / n if n else None, confidence=confidence)


def mean_from_moments(n: int, total: float, total_sq: float, *, confidence: float = 0.95) -> MeanStat:
    """Mean of ``n`` values given their sum and sum of squares, with the Student-t interval
    (bounds None for ``n < 2``)."""
    if n == 0:
        return MeanStat(None, None, None, 0)
    mean = total / n
    if n < 2:
        return MeanStat(mean, None, None, n, None)
    var = max((total_sq - n * mean * mean) / (n - 1), 0.0)
    sd = math.sqrt(var)
    h = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return MeanStat(mean, mean - h, mean + h, n, sd)


def ces(scores: Sequence[float], *, confidence: float = 0.95) -> MeanStat:
    """CES: mean of raw 1–7 scores with the Student-t interval."""
    return mean_from_moments(len(scores), float(sum(scores)), float(sum(s * s for s in scores)),
                             confidence=confidence)


def normalize_score(kind: str, score: float) -> float:
    """``(score − lo) / (hi − lo)`` on the kind's scale (0 = worst, 1 = best)."""
    if kind not in SCALES:
        raise UnknownNameError("survey kind", kind, SCALES)
    lo, hi = SCALES[kind]
    return (score - lo) / (hi - lo)


FACES: tuple[tuple[float, str, str], ...] = (
    (0.40, "😞", "unhappy"), (0.55, "😕", "uneasy"), (0.70, "🙂", "content"), (1.01, "😀", "delighted"),
)
"""Emotion thresholds: a score below the first number gets that face."""


def face(emotion: float | None) -> str:
    """The face for an emotion score in [0, 1] (``·`` for none)."""
    if emotion is None:
        return "·"
    return next(f for limit, f, _ in FACES if emotion < limit)


def mood(emotion: float | None) -> str:
    """The word for an emotion score (unhappy < 0.40 <= uneasy < 0.55 <= content < 0.70 <= delighted)."""
    if emotion is None:
        return "no answers"
    return next(m for limit, _, m in FACES if emotion < limit)


# ============================================================================ comment lexicon
THEMES: tuple[str, ...] = ("shipping_costs", "delivery_speed", "product_quality", "customer_service", "price",
                           "usability", "onboarding")
OTHER_THEME = "other"

THEME_LEXICON: dict[str, tuple[str, ...]] = {
    "shipping_costs": (
        "versandkosten*", "versandgebühr*", "versand", "versands", "porto", "kostenlos* versand",
        "gratis versand", "shipping", "shipping cost*", "shipping fee*", "shipping charge*", "free shipping",
        "pay shipping", "postage", "delivery charge*", "delivery fee*",
    ),
    "delivery_speed": (
        "liefer*", "zustellung*", "paket*", "verpackt", "express", "schnell* versand", "versand dauer*",
        "delivery", "delivered", "deliver", "arrived", "arrive*", "parcel*", "package*", "packed",
        "fast shipping", "quick shipping", "slow shipping", "shipping time*", "shipping took",
    ),
    "product_quality": (
        "qualität*", "verarbeitung", "material*", "kaputt", "beschreibung", "quality", "well made",
        "product quality", "broke", "broken", "material", "as described", "description", "durable",
    ),
    "customer_service": (
        "kundenservice", "kundendienst", "service", "support", "hotline", "kundenbetreuung",
        "customer service", "customer support", "service team", "support team", "helpdesk",
    ),
    "price": (
        "preis*", "teuer*", "günstig*", "preis leistung*", "price*", "pricing", "expensive", "overpriced",
        "value for money", "cheaper", "costs too much",
    ),
    "usability": (
        "bedienung*", "bedien*", "website", "webseite", "seite", "suche", "navigation", "übersichtlich*",
        "handy", "app", "usability", "easy to use", "hard to use", "to use", "user friendly", "intuitive",
        "intuitiv", "navigate", "search", "checkout", "mobile", "phone", "confusing", "interface",
    ),
    "onboarding": (
        "onboarding*", "einrichtung", "einarbeitung", "setup", "set up", "up and running", "schulung*",
        "training", "implementation", "implementierung",
    ),
}
"""Theme -> keywords (German and English). A keyword is a phrase of lower-case word
tokens; a token ending in ``*`` matches any word starting with it (``liefer*`` matches
``Lieferung``, ``Lieferzeit``). Every match scores its number of tokens, so a specific
phrase beats a single word ("fast shipping" → delivery_speed beats "shipping" →
shipping_costs). The theme with the highest score wins; ties go to the theme mentioned
first; a comment without any match is ``other``."""

POSITIVE: tuple[str, ...] = (
    # de
    "gut", "gute", "guter", "gutes", "guten", "super", "toll", "toller", "tolle", "tolles", "top", "fair", "fairer",
    "faire", "transparent", "klar", "schnell", "schnelle", "schneller", "pünktlich", "freundlich", "hilfreich",
    "geholfen", "gelöst", "sofort", "hervorragend", "einfach", "leicht", "übersichtlich", "intuitiv", "überzeugt",
    "begleitet", "strukturiert", "kostenlos", "kostenloser", "kostenlose", "gratis", "zufrieden", "perfekt",
    "empfehlenswert", "prima", "genau", "entspricht", "gerechtfertigt", "in ordnung", "geantwortet", "helfen",
    "ausgezeichnet", "spitze", "klasse", "schön", "gern",
    # en
    "good", "great", "excellent", "love", "fair", "transparent", "clear", "clearly", "fast", "quick", "quickly",
    "on time", "friendly", "helpful", "solved", "right away", "happy", "easy", "intuitive", "well",
    "reasonable", "free", "exactly", "worth", "match", "matches", "answer", "answered", "help", "perfect",
    "recommend", "amazing", "awesome", "satisfied", "smooth", "nice", "structured", "guided",
)
"""Positive words and phrases (+1 each)."""

NEGATIVE: tuple[str, ...] = (
    # de
    "ärgerlich", "abgebrochen", "nein danke", "spät", "später", "langsam", "gedauert", "länger als", "enttäuschend",
    "enttäuscht", "kaputt", "billig", "schlecht", "schlechte", "schlechter", "unfreundlich", "umständlich",
    "verwirrend", "mühsam", "chaotisch", "kompliziert", "unklar", "fehlte", "fehlt", "teuer", "ärgerlich",
    "nervig", "katastrophe", "mangelhaft", "leider", "beschwerde",
    # en
    "annoying", "late", "slow", "took", "longer than", "disappointing", "disappointed", "broke", "broken", "cheap",
    "poor", "bad", "unfriendly", "confusing", "hard", "pain", "chaotic", "complicated", "unclear", "expensive",
    "no thanks", "why do i", "why do we", "warum", "wieso", "terrible", "awful", "worst", "missing", "overpriced", "left", "frustrating", "unhelpful",
)
"""Negative words and phrases (−1 each)."""

EXCESS: tuple[str, ...] = (
    "hoch", "high", "lange", "long", "teuer", "expensive", "spät", "late", "langsam", "slow", "viel", "much",
    "kompliziert", "complicated", "klein", "small", "wenig", "little", "kurz", "short",
)
"""Words that ``zu``/``too`` turn into a complaint: "zu hoch", "too long" score −2
(replacing the word's own polarity)."""
INTENSIFIERS: tuple[str, ...] = ("zu", "too")

NEGATORS: tuple[str, ...] = (
    "nicht", "kein", "keine", "keinen", "keiner", "keinem", "nie", "niemals", "niemand", "nichts", "wenig",
    "ohne", "not", "no", "never", "nobody", "nothing", "without", "don't", "doesn't", "didn't", "isn't", "wasn't",
    "cannot", "can't", "hardly",
)
"""A negator flips the polarity of the next polarity word in its clause; when none
follows (German "entspricht nicht"), of the nearest one before it in the clause; a
negator with no polarity term in its clause counts −1 ("no fixed contact").
Clauses end at ``. , ; : ! ?`` and at "aber"/"but"."""

CLAUSE_BREAKS = ("aber", "but", "however", "jedoch")

GERMAN_HINTS: frozenset[str] = frozenset({
    "der", "die", "das", "und", "ist", "nicht", "ich", "zu", "mit", "sehr", "war", "hat", "für", "auf", "bei",
    "ein", "eine", "einer", "sind", "auch", "im", "dem", "den", "uns", "mir", "mich", "schon", "über", "nach",
    "kam", "woanders", "dass", "alles", "gut", "nein", "danke", "wie", "sich", "wir", "es", "an",
})
ENGLISH_HINTS: frozenset[str] = frozenset({
    "the", "and", "is", "was", "not", "i", "to", "with", "very", "for", "on", "at", "a", "an", "are", "it",
    "my", "me", "we", "us", "of", "in", "did", "does", "do", "so", "too", "than", "that", "after", "could",
    "everything", "found", "way", "why", "love", "our", "as", "had", "during", "feels", "up",
})
_GERMAN_MARKS = re.compile(r"[äöüß]|sch|(?:ung|keit|heit|lich|isch|ig)$")
_ENGLISH_MARKS = re.compile(r"th|ee|ea|(?:ing|ed|ly|tion|ness)$")

_TOKEN = re.compile(r"[^\W\d_]+(?:'[a-z]+)?|[.,;:!?]", re.UNICODE)


def _compile(phrases: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
    return [(tuple(p.split()), p) for p in phrases]


_THEME_PATTERNS = {theme: _compile(words) for theme, words in THEME_LEXICON.items()}
_POS = _compile(POSITIVE)
_NEG = _compile(NEGATIVE)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (letters, apostrophes inside English contractions) and the
    clause punctuation ``. , ; : ! ?``; hyphens and digits separate words."""
    return _TOKEN.findall(text.lower())


def _token_match(pattern: str, token: str) -> bool:
    return token.startswith(pattern[:-1]) if pattern.endswith("*") else token == pattern


def _matches(tokens: Sequence[str], phrase: tuple[str, ...]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(tokens) - n + 1)
            if all(_token_match(p, tokens[i + j]) for j, p in enumerate(phrase))]


@dataclass(frozen=True)
class CommentAnalysis:
    """One comment read by the lexicon."""

    theme: str
    """Best theme (see :data:`THEME_LEXICON`) or ``other``."""
    theme_scores: dict[str, int]
    polarity: str
    """positive | negative | neutral — the sign of ``sentiment``."""
    sentiment: int
    """Sum of the polarity terms after negation (+1/−1 per word, −2 for zu/too + excess word)."""
    language: str
    """de | en | unknown — by counting function words (and umlauts for German)."""


def comment_theme(tokens: Sequence[str]) -> tuple[str, dict[str, int]]:
    """The best theme of tokenised text and the score of every theme that matched."""
    scores: dict[str, int] = {}
    first: dict[str, int] = {}
    for theme, patterns in _THEME_PATTERNS.items():
        for phrase, _ in patterns:
            for i in _matches(tokens, phrase):
                scores[theme] = scores.get(theme, 0) + len(phrase)
                first[theme] = min(first.get(theme, i), i)
    if not scores:
        return OTHER_THEME, {}
    best = max(scores, key=lambda t: (scores[t], -first[t]))
    return best, scores


def comment_sentiment(tokens: Sequence[str]) -> int:
    """Lexicon sentiment of tokenised text with negation and ``zu``/``too`` handling (see
    :data:`NEGATORS`, :data:`EXCESS`)."""
    clauses: list[list[str]] = [[]]
    for tok in tokens:
        if tok in ".,;:!?" or tok in CLAUSE_BREAKS:
            clauses.append([])
        else:
            clauses[-1].append(tok)
    total = 0
    for clause in clauses:
        # (position, length, weight) of every polarity term; longer phrases shadow words inside them
        terms: dict[int, tuple[int, int]] = {}
        covered: set[int] = set()
        for patterns, weight in ((_NEG, -1), (_POS, 1)):
            for phrase, _ in sorted(patterns, key=lambda p: -len(p[0])):
                for i in _matches(clause, phrase):
                    span = set(range(i, i + len(phrase)))
                    if span & covered:
                        continue
                    covered |= span
                    terms[i] = (len(phrase), weight)
        for i, tok in enumerate(clause[:-1]):
            if tok in INTENSIFIERS and clause[i + 1] in EXCESS:
                terms.pop(i, None)
                terms[i + 1] = (1, -2)
        weights = dict(sorted(terms.items()))
        for i, tok in enumerate(clause):
            if tok not in NEGATORS:
                continue
            after = [j for j in weights if j > i]
            before = [j for j in weights if j < i]
            target = after[0] if after else (before[-1] if before else None)
            if target is not None:
                length, w = weights[target]
                weights[target] = (length, -w)
            else:  # "no fixed contact", "kein Ansprechpartner": stating an absence is a complaint
                total -= 1
        total += sum(w for _, w in weights.values())
    return total


def comment_language(tokens: Sequence[str]) -> str:
    """``de`` or ``en``: each function word of :data:`GERMAN_HINTS` / :data:`ENGLISH_HINTS`
    scores 2, every other word 1 for a typical spelling (German: ä ö ü ß, "sch", endings
    -ung -keit -heit -lich -isch -ig; English: "th", "ee", "ea", endings -ing -ed -ly
    -tion -ness); ``unknown`` on a tie."""
    de = en = 0
    for t in tokens:
        if t in GERMAN_HINTS:
            de += 2
        elif t in ENGLISH_HINTS:
            en += 2
        else:
            de += bool(_GERMAN_MARKS.search(t))
            en += bool(_ENGLISH_MARKS.search(t))
    return "de" if de > en else "en" if en > de else "unknown"


def analyze_comment(text: str) -> CommentAnalysis:
    """Theme, polarity and language of one free-text comment (German or English).

    Theme: :data:`THEME_LEXICON` scoring. Sentiment: the sum of :data:`POSITIVE` (+1) and
    :data:`NEGATIVE` (−1) terms per clause, "zu/too + excess word" −2, each negator
    flipping one term (:data:`NEGATORS`); polarity is its sign (0 = neutral).
    """
    tokens = tokenize(text)
    theme, scores = comment_theme(tokens)
    s = comment_sentiment(tokens)
    polarity = "positive" if s > 0 else "negative" if s < 0 else "neutral"
    return CommentAnalysis(theme, scores, polarity, s, comment_language(tokens))


# ============================================================================ request model
class SurveyQuery(BaseModel):
    """What to compute. ``by``: breakdowns of the score table — ``stage``, ``touchpoint``,
    ``kind`` or another survey column, a period ``day|week|month`` (of the answer's ``ts``,
    UTC), or the name of a segment table (``persona``, a cohort); several are crossed.
    ``confidence``: level of every interval. ``examples``: quotes per theme and polarity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: tuple[str, ...] = ("stage",)
    confidence: float = 0.95
    examples: int = 2
    unit: str = "person"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()]
            raise InvalidParameterError("invalid survey query: " + "; ".join(parts)) from None
        if not MIN_CONFIDENCE <= self.confidence <= MAX_CONFIDENCE:
            raise InvalidParameterError(f"confidence must be between {MIN_CONFIDENCE} and {MAX_CONFIDENCE}, "
                                        f"got {self.confidence}")
        if self.examples < 0:
            raise InvalidParameterError(f"examples must be 0 or more, got {self.examples}")
        if self.unit not in ("person", "account"):
            raise UnknownNameError("unit", self.unit, ("person", "account"))
        if len(set(self.by)) != len(self.by) or any(not b.strip() for b in self.by):
            raise InvalidParameterError(f"breakdowns must be distinct and non-empty, got {list(self.by)}")

    @field_validator("by", mode="before")
    @classmethod
    def _by(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return tuple(v) if isinstance(v, list | tuple) else v


# ============================================================================ result
@dataclass(frozen=True)
class ScoreRow:
    """Scores of one group (one value per breakdown; ``all`` for the overall row)."""

    group: tuple[str, ...]
    answers: int
    nps: NpsStat
    csat: CsatStat
    ces: MeanStat
    emotion: MeanStat
    """Mean normalized score (0–1) over all kinds."""
    kinds: dict[str, MeanStat]
    """Mean raw score per kind present (``kinds.<kind>.mean`` of the truth)."""

    def to_dict(self, by: Sequence[str]) -> dict[str, Any]:
        return {
            **dict(zip(by, self.group, strict=True)),
            "answers": self.answers,
            "nps": self.nps.to_dict(), "csat": self.csat.to_dict(), "ces": self.ces.to_dict(),
            "emotion": {**self.emotion.to_dict(), "face": face(self.emotion.value)},
            "kinds": {k: v.to_dict() for k, v in self.kinds.items()},
        }

    def flat(self, by: Sequence[str]) -> dict[str, Any]:
        return {
            **dict(zip(by, self.group, strict=True)), "answers": self.answers,
            "nps": self.nps.value, "nps_lower": self.nps.lower, "nps_upper": self.nps.upper, "nps_n": self.nps.n,
            "promoters": self.nps.promoters, "passives": self.nps.passives, "detractors": self.nps.detractors,
            "csat": self.csat.value, "csat_lower": self.csat.lower, "csat_upper": self.csat.upper,
            "csat_n": self.csat.n, "ces": self.ces.value, "ces_lower": self.ces.lower, "ces_upper": self.ces.upper,
            "ces_n": self.ces.n, "emotion": self.emotion.value, "emotion_lower": self.emotion.lower,
            "emotion_upper": self.emotion.upper, "face": face(self.emotion.value),
        }


@dataclass(frozen=True)
class EmotionPoint:
    """The emotion of one stage (the journey map's curve of faces)."""

    stage: str
    label: str
    n: int
    score: float | None
    lower: float | None
    upper: float | None
    face: str
    mood: str
    sentiment: float | None
    """Comment sentiment of the stage: (positive − negative) / comments, in [−1, 1]."""
    comments: int

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "label": self.label, "n": self.n, "score": self.score, "lower": self.lower,
                "upper": self.upper, "face": self.face, "mood": self.mood, "sentiment": self.sentiment,
                "comments": self.comments}


@dataclass(frozen=True)
class Quote:
    text: str
    count: int
    """How many answers left exactly this comment."""
    polarity: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "count": self.count, "polarity": self.polarity}


@dataclass(frozen=True)
class ThemeRow:
    """One comment theme within ``stage`` (``all`` for every stage)."""

    stage: str
    theme: str
    comments: int
    share: float
    """Of the comments of the stage."""
    positive: int
    negative: int
    neutral: int
    sentiment: float
    """(positive − negative) / comments, in [−1, 1]."""
    emotion: float | None
    """Mean normalized score (0–1) of the answers carrying these comments."""
    examples: tuple[Quote, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "theme": self.theme, "comments": self.comments, "share": self.share,
                "positive": self.positive, "negative": self.negative, "neutral": self.neutral,
                "sentiment": self.sentiment, "emotion": self.emotion,
                "examples": [q.to_dict() for q in self.examples]}


@dataclass(frozen=True)
class SurveyResult:
    query: SurveyQuery
    overall: ScoreRow
    rows: tuple[ScoreRow, ...]
    """One per combination of breakdown values, ordered by the values (stages in model order)."""
    emotion: tuple[EmotionPoint, ...]
    """Per stage (model order, then other stage values), answers without a stage left out."""
    themes: tuple[ThemeRow, ...]
    """Per stage and theme, then ``stage='all'``; by comments, descending."""
    comments: int
    languages: dict[str, int]
    ignored: int
    """Answers left out: unknown kind, no score, or a score outside its scale."""
    model: str | None = None
    comment_table: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    """Every comment with its stage, kind, normalized score, theme, polarity, sentiment, language."""

    def emotion_by_stage(self) -> dict[str, EmotionPoint]:
        """Stage key -> emotion point (what the journey map draws)."""
        return {p.stage: p for p in self.emotion}

    def themes_of(self, stage: str = ALL_LABEL) -> tuple[ThemeRow, ...]:
        return tuple(t for t in self.themes if t.stage == stage)

    def to_dict(self) -> dict[str, Any]:
        by = self.query.by
        return {
            "by": list(by), "confidence": self.query.confidence, "model": self.model,
            "overall": self.overall.to_dict(()),
            "rows": [r.to_dict(by) for r in self.rows],
            "emotion": [p.to_dict() for p in self.emotion],
            "themes": [t.to_dict() for t in self.themes],
            "comments": self.comments, "languages": self.languages, "ignored": self.ignored,
        }

    def to_pandas(self) -> pd.DataFrame:
        """One row per group with every score and interval (flat)."""
        return pd.DataFrame([r.flat(self.query.by) for r in self.rows])

    def themes_pandas(self) -> pd.DataFrame:
        rows = []
        for t in self.themes:
            d = t.to_dict()
            d["examples"] = " | ".join(q["text"] for q in d["examples"])
            rows.append(d)
        return pd.DataFrame(rows)

    def emotion_pandas(self) -> pd.DataFrame:
        return pd.DataFrame([p.to_dict() for p in self.emotion])

    def figure(self) -> Any:
        """The emotion curve per stage drawn with faces and its confidence band."""
        import plotly.graph_objects as go

        pts = [p for p in self.emotion if p.score is not None]
        x = [p.label for p in pts]
        fig = go.Figure()
        fig.add_trace(go.Scatter(
            x=x, y=[p.score for p in pts], mode="lines+markers+text", text=[p.face for p in pts],
            textposition="top center", textfont={"size": 26}, name="emotion",
            error_y={"type": "data", "symmetric": False,
                     "array": [(p.upper - p.score) if p.upper is not None and p.score is not None else 0
                               for p in pts],
                     "arrayminus": [(p.score - p.lower) if p.lower is not None and p.score is not None else 0
                                    for p in pts]},
            customdata=[[p.n, p.mood] for p in pts],
            hovertemplate="%{x}: %{y:.2f} (%{customdata[1]}, n=%{customdata[0]})<extra></extra>",
        ))
        fig.update_layout(title="Emotion per stage (survey scores normalized to 0–1)",
                          yaxis={"range": [0, 1.1], "title": "emotion"}, showlegend=False)
        return fig


# ============================================================================ computation
_SCORE_COLUMNS = ("score", "comment", "ts", "message_id", "workspace", "person", "person_id", "account_id")


def _group_value(s: ir.Table, name: str, segments: Mapping[str, ir.Table], unit_col: str) -> tuple[ir.Table, str]:
    """``s`` with a string column ``_g_<name>`` holding the breakdown value (NULL = none)."""
    col = f"_g_{len([c for c in s.columns if c.startswith('_g_')])}"
    if name in segments:
        vals = segment_values(segments, name, unit_col, unit_as="_seg_unit", value_as=col)
        joined = s.left_join(vals, s[unit_col].cast("string") == vals._seg_unit)
        return joined.drop("_seg_unit"), col
    if name in PERIODS:
        return s.mutate(**{col: s.ts.truncate(PERIODS[name]).date().cast("string")}), col
    if name in s.columns and name not in _SCORE_COLUMNS:
        return s.mutate(**{col: s[name].cast("string")}), col
    allowed = [c for c in s.columns if c not in _SCORE_COLUMNS and not c.startswith("_")]
    raise UnknownNameError("survey breakdown", name, [*allowed, *PERIODS, *segments])


def _prepared(surveys: ir.Table) -> tuple[ir.Table, ir.Table]:
    """(valid answers with ``_norm``, the invalid ones)."""
    missing = [c for c in ("kind", "score", "ts") if c not in surveys.columns]
    if missing:
        raise UnknownNameError("column", missing[0], surveys.columns)
    kind = surveys.kind.lower()
    lo = ibis.cases(*((kind == k, float(v[0])) for k, v in SCALES.items()), else_=ibis.null("float64"))
    hi = ibis.cases(*((kind == k, float(v[1])) for k, v in SCALES.items()), else_=ibis.null("float64"))
    s = surveys.mutate(kind=kind, _lo=lo, _hi=hi)
    ok = s._lo.notnull() & s.score.notnull() & (s.score >= s._lo) & (s.score <= s._hi)
    s = s.mutate(_ok=ok.fill_null(False))
    valid = s.filter(s._ok)
    valid = valid.mutate(_norm=(valid.score - valid._lo) / (valid._hi - valid._lo))
    return valid, s.filter(~s._ok)


def _aggregate(t: ir.Table, cols: Sequence[str | None], part: str) -> ir.Table:
    one = ibis.literal(1, "int64")
    zero = ibis.literal(0, "int64")
    keys = {f"_k{i}": (t[c] if c is not None else ibis.null("string")) for i, c in enumerate(cols)}
    t = t.mutate(**keys)
    out = t.group_by([*keys, "kind"]).aggregate(
        n=t.count(),
        total=t.score.sum(),
        total_sq=(t.score * t.score).sum(),
        norm=t._norm.sum(),
        norm_sq=(t._norm * t._norm).sum(),
        promoters=ibis.cases((t.score >= PROMOTER_MIN, one), else_=zero).sum(),
        detractors=ibis.cases((t.score <= DETRACTOR_MAX, one), else_=zero).sum(),
        satisfied=ibis.cases((t.score >= CSAT_SATISFIED_MIN, one), else_=zero).sum(),
    )
    return out.mutate(part=ibis.literal(part))


def _score_row(group: tuple[str, ...], per_kind: Mapping[str, Mapping[str, Any]], conf: float) -> ScoreRow:
    def g(kind: str, key: str) -> float:
        return float(per_kind.get(kind, {}).get(key) or 0)

    n_nps = int(g("nps", "n"))
    prom, det = int(g("nps", "promoters")), int(g("nps", "detractors"))
    n_csat = int(g("csat", "n"))
    kinds = {k: mean_from_moments(int(v["n"]), float(v["total"]), float(v["total_sq"]), confidence=conf)
             for k, v in sorted(per_kind.items())}
    n_all = sum(int(v["n"]) for v in per_kind.values())
    norm = sum(float(v["norm"]) for v in per_kind.values())
    norm_sq = sum(float(v["norm_sq"]) for v in per_kind.values())
    return ScoreRow(
        group=group, answers=n_all,
        nps=nps_from_counts(prom, n_nps - prom - det, det, confidence=conf),
        csat=csat_from_counts(int(g("csat", "satisfied")), n_csat,
                              mean=kinds["csat"].value if "csat" in kinds else None, confidence=conf),
        ces=kinds.get("ces", MeanStat(None, None, None, 0)),
        emotion=mean_from_moments(n_all, norm, norm_sq, confidence=conf),
        kinds=kinds,
    )


def _stage_order(values: Sequence[str], model: JourneyModel | None) -> list[str]:
    keys = list(model.stage_keys) if model is not None else []
    known = [k for k in keys if k in values]
    return known + sorted(v for v in values if v not in keys)


def surveys(answers: ir.Table, query: SurveyQuery | None = None, *, model: JourneyModel | None = None,
            segments: Mapping[str, ir.Table] | None = None) -> SurveyResult:
    """Scores per group, emotion per stage and comment themes of survey ``answers``.

    ``answers``: ``ws.surveys()`` (``kind``, ``score``, ``ts``, ``comment``, ``stage``,
    ``touchpoint``, ``person_id``/``account_id``). ``model`` orders the stages (labels
    too); ``segments`` maps breakdown names to tables with the unit column and ``value``
    (an answer of a person with several values counts under each). Scores come from one
    backend query; comments are collected and read by :func:`analyze_comment`.
    """
    q = query or SurveyQuery()
    segments = segments or {}
    conf = q.confidence
    unit_col = "person_id" if q.unit == "person" else "account_id"
    valid, invalid = _prepared(answers)
    gcols: list[str] = []
    t = valid
    for name in q.by:
        t, col = _group_value(t, name, segments, unit_col)
        gcols.append(col)
    has_stage = "stage" in valid.columns
    width = max(len(gcols), 1)
    pad: list[str | None] = [None] * width
    parts = [_aggregate(t, pad, "overall")]
    if gcols:
        parts.append(_aggregate(t, [*gcols, *([None] * (width - len(gcols)))], "rows"))
    if has_stage:
        st = valid.mutate(_st=valid.stage.cast("string"))
        parts.append(_aggregate(st, ["_st", *([None] * (width - 1))], "stage"))
    records: list[dict[str, Any]] = reduce(lambda a, b: a.union(b), parts).to_pyarrow().to_pylist()
    ignored = int(invalid.count().to_pyarrow().as_py())

    grouped: dict[tuple[str, tuple[str | None, ...]], dict[str, dict[str, Any]]] = {}
    for r in records:
        key = tuple(r[f"_k{i}"] for i in range(width))
        grouped.setdefault((r["part"], key), {})[r["kind"]] = r
    overall = _score_row((), grouped.get(("overall", tuple(pad)), {}), conf)

    stage_order = _stage_order([k[0] for (p, k) in grouped if p == "stage" and k[0] is not None], model)
    pos = {s: i for i, s in enumerate(stage_order)}
    rows: list[ScoreRow] = []
    for (part, key), per_kind in grouped.items():
        if part != "rows":
            continue
        group = tuple(NONE_LABEL if v is None else str(v) for v in key[:len(gcols)])
        rows.append(_score_row(group, per_kind, conf))

    def sort_key(r: ScoreRow) -> tuple[Any, ...]:
        return tuple((pos.get(v, len(pos)) if name == "stage" else 0, v == NONE_LABEL, v)
                     for name, v in zip(q.by, r.group, strict=True))

    rows.sort(key=sort_key)

    comments = _comments(valid, model)
    emotion = _emotion(grouped, stage_order, model, comments, conf, width)
    themes = _themes(comments, stage_order, q.examples)
    languages = dict(Counter(comments["language"])) if len(comments) else {}
    return SurveyResult(query=q, overall=overall, rows=tuple(rows), emotion=emotion, themes=themes,
                        comments=len(comments), languages=languages, ignored=ignored,
                        model=model.key if model is not None else None, comment_table=comments)


def _comments(valid: ir.Table, model: JourneyModel | None) -> pd.DataFrame:
    if "comment" not in valid.columns:
        return pd.DataFrame(columns=["stage", "kind", "norm", "comment", "theme", "polarity", "sentiment",
                                     "language"])
    stage = valid.stage.cast("string") if "stage" in valid.columns else ibis.null("string")
    c = valid.filter(valid.comment.notnull() & (valid.comment.strip() != ""))
    got = c.select(stage=stage, kind=c.kind, norm=c._norm, comment=c.comment.strip()).to_pandas()
    cache: dict[str, CommentAnalysis] = {}
    out = []
    for text in got["comment"]:
        a = cache.get(text)
        if a is None:
            a = cache[text] = analyze_comment(text)
        out.append((a.theme, a.polarity, a.sentiment, a.language))
    got[["theme", "polarity", "sentiment", "language"]] = pd.DataFrame(out, index=got.index,
                                                                       columns=["a", "b", "c", "d"]) \
        if out else pd.DataFrame(columns=["a", "b", "c", "d"])
    return got


def _emotion(grouped: Mapping[tuple[str, tuple[str | None, ...]], Mapping[str, Mapping[str, Any]]],
             stage_order: Sequence[str], model: JourneyModel | None, comments: pd.DataFrame, conf: float,
             width: int) -> tuple[EmotionPoint, ...]:
    labels = {s.key: s.label for s in model.stages} if model is not None else {}
    points = []
    for stage in stage_order:
        per_kind = grouped.get(("stage", (stage, *([None] * (width - 1)))), {})
        row = _score_row((stage,), per_kind, conf)
        e = row.emotion
        mine = comments[comments["stage"] == stage] if len(comments) else comments
        n_c = len(mine)
        sent = ((mine["polarity"] == "positive").sum() - (mine["polarity"] == "negative").sum()) / n_c if n_c else None
        points.append(EmotionPoint(stage=stage, label=labels.get(stage, stage), n=e.n, score=e.value,
                                   lower=e.lower, upper=e.upper, face=face(e.value), mood=mood(e.value),
                                   sentiment=None if sent is None else float(sent), comments=n_c))
    return tuple(points)


def _themes(comments: pd.DataFrame, stage_order: Sequence[str], examples: int) -> tuple[ThemeRow, ...]:
    if not len(comments):
        return ()
    out: list[ThemeRow] = []
    scopes: list[tuple[str, pd.DataFrame]] = [(s, comments[comments["stage"] == s]) for s in stage_order]
    scopes.append((ALL_LABEL, comments))
    for stage, frame in scopes:
        total = len(frame)
        if not total:
            continue
        for theme, g in frame.groupby("theme", sort=False):
            pol = g["polarity"].value_counts()
            pos, neg, neu = int(pol.get("positive", 0)), int(pol.get("negative", 0)), int(pol.get("neutral", 0))
            quotes: list[Quote] = []
            for polarity in ("negative", "positive", "neutral"):
                texts = g.loc[g["polarity"] == polarity, "comment"].value_counts()
                ranked = sorted(texts.items(), key=lambda kv: (-kv[1], kv[0]))[:examples]
                quotes += [Quote(str(t), int(n), polarity) for t, n in ranked]
            out.append(ThemeRow(stage=stage, theme=str(theme), comments=len(g), share=len(g) / total,
                                positive=pos, negative=neg, neutral=neu, sentiment=(pos - neg) / len(g),
                                emotion=float(g["norm"].mean()), examples=tuple(quotes)))
    order = {s: i for i, (s, _) in enumerate(scopes)}
    out.sort(key=lambda r: (order[r.stage], -r.comments, r.theme))
    return tuple(out)


__all__ = [
    "CSAT_SATISFIED_MIN", "DETRACTOR_MAX", "NEGATIVE", "NEGATORS", "POSITIVE", "PROMOTER_MIN", "SCALES",
    "THEMES", "THEME_LEXICON", "CommentAnalysis", "CsatStat", "EmotionPoint", "Estimate", "MeanStat", "NpsStat",
    "Quote", "ScoreRow", "SurveyQuery", "SurveyResult", "ThemeRow", "analyze_comment", "ces", "csat",
    "csat_from_counts", "face", "mean_from_moments", "mood", "normalize_score", "nps", "nps_from_counts",
    "surveys", "tokenize", "wilson_interval",
]
