"""The HTTP surfaces: the collector (Segment-compatible tracking API, pixel, links)."""
