"""Survey comment templates: German and English, positive and negative, per theme."""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("de", "en")
POLARITIES: tuple[str, ...] = ("negative", "positive")

THEMES: tuple[str, ...] = (
    "shipping_costs",
    "delivery_speed",
    "product_quality",
    "customer_service",
    "price",
    "usability",
    "onboarding",
)
THEME: dict[str, int] = {k: i for i, k in enumerate(THEMES)}

# theme -> language -> polarity -> variants
COMMENTS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "shipping_costs": {
        "de": {
            "negative": (
                "Die Versandkosten sind viel zu hoch, deshalb habe ich abgebrochen.",
                "Versandkosten erst im Warenkorb zu sehen ist ärgerlich.",
                "4,95 € Versand bei so einer kleinen Bestellung? Nein danke.",
            ),
            "positive": (
                "Kostenloser Versand ab 60 € ist super.",
                "Die Versandkosten sind fair und transparent.",
                "Gut, dass die Versandkosten klar angezeigt werden.",
            ),
        },
        "en": {
            "negative": (
                "Shipping costs are way too high, so I left.",
                "Seeing the shipping costs only in the cart is annoying.",
                "Why do I pay shipping on such a small order?",
            ),
            "positive": (
                "Free shipping above 60 euros is great.",
                "Shipping costs are fair and clearly shown.",
                "Love that the shipping fee is transparent.",
            ),
        },
    },
    "delivery_speed": {
        "de": {
            "negative": (
                "Die Lieferung hat über eine Woche gedauert.",
                "Lieferung kam zu spät, trotz Express.",
                "Die Lieferzeit war länger als angegeben.",
            ),
            "positive": (
                "Super schnelle Lieferung, schon am nächsten Tag da!",
                "Lieferung war pünktlich und gut verpackt.",
                "Die schnelle Lieferung hat mich überzeugt.",
            ),
        },
        "en": {
            "negative": (
                "Delivery took more than a week.",
                "The parcel arrived late, slow delivery.",
                "Delivery time was longer than promised.",
            ),
            "positive": (
                "Very fast delivery, arrived the next day!",
                "Delivery was quick and on time.",
                "Fast shipping and well packed.",
            ),
        },
    },
    "product_quality": {
        "de": {
            "negative": (
                "Die Qualität ist enttäuschend, nach zwei Wochen kaputt.",
                "Material fühlt sich billig an, schlechte Qualität.",
                "Qualität entspricht nicht der Beschreibung.",
            ),
            "positive": (
                "Top Qualität, genau wie beschrieben.",
                "Die Qualität der Produkte ist hervorragend.",
                "Sehr gute Verarbeitung und Qualität.",
            ),
        },
        "en": {
            "negative": (
                "Poor quality, it broke after two weeks.",
                "The quality does not match the description.",
                "Feels cheap, disappointing product quality.",
            ),
            "positive": (
                "Excellent quality, exactly as described.",
                "Great product quality, very happy.",
                "High quality and well made.",
            ),
        },
    },
    "customer_service": {
        "de": {
            "negative": (
                "Der Kundenservice hat drei Tage nicht geantwortet.",
                "Kundenservice war unfreundlich und wenig hilfreich.",
                "Niemand im Kundenservice konnte mir helfen.",
            ),
            "positive": (
                "Der Kundenservice war sehr freundlich und schnell.",
                "Toller Kundenservice, Problem sofort gelöst.",
                "Kundenservice hat mir super geholfen.",
            ),
        },
        "en": {
            "negative": (
                "Customer service did not answer for three days.",
                "Support was unfriendly and not helpful.",
                "Nobody in customer service could help me.",
            ),
            "positive": (
                "Customer service was friendly and fast.",
                "Great support, my problem was solved right away.",
                "The service team was very helpful.",
            ),
        },
    },
    "price": {
        "de": {
            "negative": (
                "Die Preise sind zu hoch im Vergleich zur Konkurrenz.",
                "Zu teuer, woanders ist der Preis besser.",
                "Der Preis ist für das Gebotene nicht gerechtfertigt.",
            ),
            "positive": (
                "Fairer Preis für die Qualität.",
                "Gutes Preis-Leistungs-Verhältnis.",
                "Die Preise sind absolut in Ordnung.",
            ),
        },
        "en": {
            "negative": (
                "Prices are too high compared to other shops.",
                "Too expensive, found a better price elsewhere.",
                "The price is not worth it.",
            ),
            "positive": (
                "Fair price for the quality.",
                "Good value for money.",
                "Prices are totally reasonable.",
            ),
        },
    },
    "usability": {
        "de": {
            "negative": (
                "Die Bedienung der Website ist umständlich.",
                "Die Suche findet nichts, Bedienung ist verwirrend.",
                "Auf dem Handy ist die Bedienung sehr mühsam.",
            ),
            "positive": (
                "Die Bedienung ist einfach, alles schnell gefunden.",
                "Die Website ist übersichtlich und leicht zu bedienen.",
                "Bedienung ist intuitiv, auch auf dem Handy.",
            ),
        },
        "en": {
            "negative": (
                "The website is hard to use and confusing.",
                "Search does not work well, poor usability.",
                "Checkout on mobile is a pain to use.",
            ),
            "positive": (
                "Easy to use, found everything quickly.",
                "The website is clear and easy to navigate.",
                "Very intuitive, even on my phone.",
            ),
        },
    },
    "onboarding": {
        "de": {
            "negative": (
                "Das Onboarding war chaotisch und hat zu lange gedauert.",
                "Die Einrichtung war kompliziert, Onboarding unklar.",
                "Beim Onboarding fehlte uns ein fester Ansprechpartner.",
            ),
            "positive": (
                "Das Onboarding war strukturiert und schnell.",
                "Einrichtung in zwei Tagen, das Onboarding war toll.",
                "Das Onboarding-Team hat uns super begleitet.",
            ),
        },
        "en": {
            "negative": (
                "Onboarding was chaotic and took too long.",
                "Setup was complicated, onboarding unclear.",
                "We had no fixed contact during onboarding.",
            ),
            "positive": (
                "Onboarding was well structured and fast.",
                "Up and running in two days, great onboarding.",
                "The onboarding team guided us very well.",
            ),
        },
    },
}

COMMENT_TABLE: list[list[list[tuple[str, ...]]]] = [
    [[COMMENTS[t][lang][pol] for pol in POLARITIES] for lang in LANGUAGES] for t in THEMES
]
"""COMMENT_TABLE[theme][language][polarity] -> variants (code-indexed)."""
