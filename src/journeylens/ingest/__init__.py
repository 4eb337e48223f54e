"""File importers: read a file in chunks, map its columns, validate rows.

>>> src = open_source("events.csv", "events", workspace="shop")   # doctest: +SKIP
>>> src.info.column_map, src.info.folded                           # doctest: +SKIP
>>> for chunk in src:                                              # doctest: +SKIP
...     store.append("events", chunk.accepted)
...     store.append("quarantine", chunk.quarantined)

Formats: CSV/TSV (``.csv``, ``.tsv``, also ``.gz``), JSON lines (``.jsonl``,
``.ndjson``, ``.json``, also ``.gz``; Segment/RudderStack messages are
recognised), Parquet (``.parquet``, ``.pq``). Column mapping rules are in
:mod:`journeylens.ingest.mapping`, readers and line numbers in
:mod:`journeylens.ingest.readers`, validation rules in
:mod:`journeylens.ingest.validate`, Segment fields in
:mod:`journeylens.ingest.segment`, channel derivation in
:mod:`journeylens.ingest.channels`.
"""

from journeylens.ingest.source import FORMATS, Source, SourceInfo, open_source
from journeylens.ingest.validate import ValidatedChunk

__all__ = ["FORMATS", "Source", "SourceInfo", "ValidatedChunk", "open_source"]
