"""Deriving an event's marketing ``channel`` from its UTM tags and referrer (GA-like).

Applied only where ``channel`` is NULL and ``utm_medium`` or ``referrer`` is
present. ``utm_medium`` is compared lower-cased with every non-alphanumeric
character removed (``paid-search`` = ``paidsearch``); the first rule that
matches wins:

1. medium ``paidsocial``/``socialpaid``, or medium ``cpc``/``ppc`` with a
   social network as ``utm_source`` (facebook, instagram, linkedin, twitter,
   x, tiktok, pinterest, snapchat, reddit, youtube, xing, meta, fb, ig)
   → ``paid_social``
2. medium ``cpc``, ``ppc``, ``paidsearch``, ``sem`` → ``paid_search``
3. ``display``, ``banner``, ``cpm`` → ``display``
4. ``email``, ``newsletter`` → ``email``
5. ``print``, ``qr``, ``qrcode``, ``flyer`` → ``print``
6. ``affiliate``, ``partner`` → ``partner``
7. ``social``, ``socialmedia``, ``socialnetwork``, ``sm`` → ``social``
8. ``organic`` → ``organic_search``; ``referral`` → ``referral``
9. any other medium → stays NULL (the tag says it is a campaign, but not which kind)

Without ``utm_medium``, the referrer decides: a known search engine host
(google, bing, duckduckgo, yahoo, yandex, baidu, ecosia, startpage, qwant,
naver, seznam, ask, aol, brave search) → ``organic_search``; the page's own
host (internal navigation) → stays NULL; any other host → ``referral``.
Everything else stays NULL.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from journeylens.ingest.convert import to_numpy_mask

_MEDIUM_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("paid_search", ("cpc", "ppc", "paidsearch", "sem")),
    ("display", ("display", "banner", "cpm")),
    ("email", ("email", "newsletter")),
    ("print", ("print", "qr", "qrcode", "flyer")),
    ("partner", ("affiliate", "partner")),
    ("social", ("social", "socialmedia", "socialnetwork", "sm")),
    ("organic_search", ("organic",)),
    ("referral", ("referral",)),
)
_PAID_SOCIAL = ("paidsocial", "socialpaid")
_SOCIAL_SOURCE = (r"(facebook|instagram|linkedin|twitter|tiktok|pinterest|snapchat|reddit|youtube|xing)"
                  r"|^(x|meta|fb|ig)$")
_ENGINES = "google|bing|duckduckgo|yahoo|yandex|baidu|ecosia|startpage|qwant|naver|seznam|ask|aol"
_SEARCH_REFERRER = (  # on the raw referrer: optional scheme and user info, any subdomain
    r"(?i)^(?:[a-z][a-z0-9+.-]*://)?(?:[^/?#@]*@)?(?:(?:[^/?#:]*\.)?(?:" + _ENGINES + r")\.[a-z.]+"
    r"|search\.brave\.com)(?:[/:?#]|$)"
)
_AUTHORITY = r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?P<authority>[^/?#]*)"  # one-pass: fast in RE2

CHANNELS = ("paid_social", *(name for name, _ in _MEDIUM_RULES))
_NAMES: list[str | None] = [None, *CHANNELS]
_CPC = len(_NAMES)  # medium cpc/ppc: paid_social or paid_search depending on the source
_OTHER = len(_NAMES) + 1  # a medium no rule knows: channel stays NULL


def _distinct_first(arr: pa.Array, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """``fn`` over the distinct values of ``arr`` when they repeat a lot (checked on a sample)."""
    if len(arr) > 4096:
        distinct = pc.count_distinct(arr.slice(0, 4096)).as_py()
        if distinct > 1024:
            return fn(arr)
    encoded = arr.dictionary_encode()
    return fn(encoded.dictionary).take(encoded.indices)


def _host_of(values: pa.Array) -> pa.Array:
    host = pc.struct_field(pc.extract_regex(values, _AUTHORITY), [0])
    if bool(pc.any(pc.or_(pc.match_substring(host, "@"), pc.match_substring(host, ":"))).as_py()):
        host = pc.replace_substring_regex(host, r"^.*@|:[0-9]*$", "")  # user info, port
    host = pc.ascii_lower(host)
    www = pc.starts_with(host, "www.")
    if bool(pc.any(www).as_py()):
        host = pc.if_else(www, pc.utf8_slice_codeunits(host, 4), host)
    return pc.if_else(pc.equal(host, ""), pa.scalar(None, pa.string()), host)


def _host(arr: pa.Array) -> pa.Array:
    """Lower-case host of URLs with a scheme, ``www.`` removed; NULL where there is none."""
    return _distinct_first(arr, _host_of)


def _is_search(arr: pa.Array) -> pa.Array:
    return _distinct_first(arr, lambda v: pc.match_substring_regex(v, _SEARCH_REFERRER))


def _per_value(arr: pa.Array, classify: Callable[[pa.Array], npt.NDArray[np.int8]]) -> npt.NDArray[np.int8]:
    """``classify`` applied to the distinct values of ``arr`` only, spread back to every row (NULL → 0)."""
    encoded = arr.dictionary_encode()
    per_value = np.concatenate([[0], classify(encoded.dictionary)]).astype(np.int8)
    indices = np.asarray(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return per_value[indices + 1]


def _medium_codes(values: pa.Array) -> npt.NDArray[np.int8]:
    medium = pc.replace_substring_regex(pc.utf8_lower(values), r"[^0-9a-z]", "")
    code = np.zeros(len(values), dtype=np.int8)
    for name, media in (("paid_social", _PAID_SOCIAL), *_MEDIUM_RULES):
        hit = to_numpy_mask(pc.is_in(medium, pa.array(media))) & (code == 0)
        code[hit] = _NAMES.index(name)
    code[to_numpy_mask(pc.is_in(medium, pa.array(["cpc", "ppc"])))] = _CPC
    code[code == 0] = _OTHER
    return code


def _social_codes(values: pa.Array) -> npt.NDArray[np.int8]:
    return to_numpy_mask(pc.match_substring_regex(pc.utf8_lower(values), _SOCIAL_SOURCE)).astype(np.int8)


def derive_channel(channel: pa.Array, utm_source: pa.Array, utm_medium: pa.Array,
                   referrer: pa.Array, url: pa.Array) -> pa.Array:
    """``channel`` with NULLs filled by the rules above where they apply."""
    if channel.null_count == 0:
        return channel
    todo = pc.and_(channel.is_null(), pc.or_(utm_medium.is_valid(), referrer.is_valid()))
    mask = to_numpy_mask(todo)
    if not bool(mask.any()):
        return channel
    idx = pa.array(np.nonzero(mask)[0])
    medium = _per_value(utm_medium.take(idx), _medium_codes)
    code = np.where(medium == _OTHER, 0, medium).astype(np.int8)
    cpc = medium == _CPC
    if bool(cpc.any()):
        social = _per_value(utm_source.take(idx), _social_codes).astype(np.bool_)
        code[cpc] = np.where(social[cpc], _NAMES.index("paid_social"), _NAMES.index("paid_search"))
    free = medium == 0  # no utm_medium: the referrer decides
    if bool(free.any()):
        rows = np.nonzero(free)[0]
        ref = referrer.take(idx.take(pa.array(rows)))
        search = to_numpy_mask(_is_search(ref))
        code[rows[search]] = _NAMES.index("organic_search")
        other = ~search & to_numpy_mask(ref.is_valid())
        if bool(other.any()):
            pick = pa.array(np.nonzero(other)[0])
            ref_other = ref.take(pick)
            url_other = url.take(idx.take(pa.array(rows[other])))
            with ThreadPoolExecutor(max_workers=2) as pool:  # Arrow kernels release the GIL
                ref_host, page_host = pool.map(_host, (ref_other, url_other))
            referral = to_numpy_mask(pc.and_kleene(ref_host.is_valid(),
                                                   pc.invert(pc.equal(ref_host, page_host).fill_null(False))))
            code[rows[other][referral]] = _NAMES.index("referral")
    labels = pa.array(_NAMES, pa.string())
    derived = labels.take(pa.array(code.astype(np.int32)))
    return pc.replace_with_mask(channel, todo.fill_null(False), derived)
