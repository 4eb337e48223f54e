"""The touchpoint catalog: the built-in file, user extensions and overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeylens.errors import ModelError
from journeylens.journey import Touchpoint, load_catalog

# Touchpoints the demo vocabulary uses (from the brief), all of which the catalog must know.
DEMO_TOUCHPOINTS = (
    "search_ad", "social_ad", "display_ad", "organic_search", "social_media", "influencer",
    "newsletter", "flyer_qr", "poster_qr", "tv_spot", "referral_link", "website",
)  # fmt: skip


def test_builtin_catalog() -> None:
    catalog = load_catalog()
    assert len(catalog) == 28
    assert set(DEMO_TOUCHPOINTS) <= set(catalog)
    assert catalog["search_ad"] == Touchpoint(
        "search_ad", "paid_search", True, True, "marketing", "Search engine ads"
    )
    # values with commas are whole descriptions, not split into keys
    assert catalog["online_shop"].description == "Online shop, product pages, cart and checkout"
    assert catalog["review_portal"].direct is False
    assert catalog["flyer_qr"].online is False
    assert next(iter(catalog)) == "search_ad"


def test_to_pandas() -> None:
    df = load_catalog().to_pandas()
    assert list(df.columns) == ["touchpoint", "channel", "direct", "online", "owner", "description"]
    assert len(df) == 28
    row = df.set_index("touchpoint").loc["tv_spot"]
    assert row["channel"] == "tv_radio" and not row["online"] and row["owner"] == "marketing"


def test_user_file_overrides_fields_and_adds_touchpoints(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "touchpoints:\n"
        "  website: {owner: growth}\n"
        "  podcast:\n"
        "    channel: audio\n"
        "    direct: true\n"
        "    online: true\n"
        "    owner: marketing\n",
        encoding="utf-8",
    )
    catalog = load_catalog(path)
    assert len(catalog) == 29
    assert catalog["website"] == Touchpoint(
        "website", "direct", True, True, "growth", "Website and landing pages"
    )
    assert catalog["podcast"] == Touchpoint("podcast", "audio", True, True, "marketing", "")
    assert list(catalog)[-1] == "podcast"
    assert catalog.paths[-1] == path
    assert load_catalog()["website"].owner == "marketing"  # the built-in stays as it was


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("touchpoints:\n  podcast: {direct: true, online: true, owner: marketing}\n", 2,
         "touchpoints.podcast.channel", "missing required key 'channel'"),
        ("touchpoints:\n  website:\n    direct: yes please\n", 3,
         "touchpoints.website.direct", "expected true or false"),
        ("touchpoints:\n  website:\n    chanel: web\n", 3,
         "touchpoints.website.chanel", "did you mean 'channel'"),
        ("touchpoints:\n  website: {owner: 7}\n", 2, "touchpoints.website.owner", "expected text"),
        ("tuchpoints: {}\n", 1, "tuchpoints", "did you mean 'touchpoints'"),
        ("touchpoints: [website]\n", 1, "touchpoints", "expected a mapping"),
        ("touchpoints:\n  website: {owner: growth\n", 3, None, "invalid YAML"),
    ],
    ids=["new entry incomplete", "bool", "unknown field", "text", "top key", "not a mapping", "syntax"],
)  # fmt: skip
def test_invalid_catalog_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str | None, fragment: str
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelError) as info:
        load_catalog(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    if key is not None:
        assert f"field '{key}'" in message
    assert fragment in message


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="file not found"):
        load_catalog(tmp_path / "missing.yaml")
