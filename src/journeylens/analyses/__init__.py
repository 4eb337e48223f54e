"""Analyses: pure functions over Ibis tables returning typed, frozen results.

Each result renders itself: ``to_dict()`` (the JSON contract), ``to_pandas()``
(tables, CSV) and ``figure()`` (a Plotly figure).
"""
