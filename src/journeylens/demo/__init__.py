"""Seeded demo data with planted ground truth (B2C shop, B2B SaaS).

>>> from journeylens.demo import generate
>>> res = generate(scenario="shop", people=5000, seed=42, out_dir="demo")  # doctest: +SKIP

See ``docs/demo.md`` for the scenarios, the event vocabulary and every field of
``truth.json``.
"""

from journeylens.demo.generator import DemoResult, generate

__all__ = ["DemoResult", "generate"]
