"""Seeded random numbers for the simulation.

Every fixed-size block of people gets its own :class:`numpy.random.Generator`,
seeded from ``(seed, scenario, block)`` only, so a block's output never depends
on how many blocks came before or how the output is batched. The per-person
simulation is scalar Python code; calling numpy once per draw would dominate the
run time, so :class:`Rand` hands out numbers from buffers the generator fills in
chunks (same numbers, same order, every run).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import chain

import numpy as np

_SCENARIO_KEYS = {"shop": 1, "b2b": 2}
_CHUNK = 4096
_MASK48 = (1 << 48) - 1


def block_generator(seed: int, scenario: str, block: int, stream: int = 0) -> np.random.Generator:
    """The generator of one block of people (``stream`` separates independent uses)."""
    ss = np.random.SeedSequence(entropy=seed, spawn_key=(_SCENARIO_KEYS[scenario], block, stream))
    return np.random.Generator(np.random.PCG64(ss))


def _chunks(draw: Callable[[int], np.ndarray]) -> Iterator[list[float]]:
    while True:
        yield draw(_CHUNK).tolist()


class Rand:
    """Buffered scalar draws from a numpy Generator.

    ``u()`` and ``z()`` are C-level iterators over chunks the generator fills on demand
    (the cheapest scalar draw Python offers); everything else is derived from them.
    """

    __slots__ = ("gen", "u", "z")

    def __init__(self, gen: np.random.Generator) -> None:
        self.gen = gen
        self.u: Callable[[], float] = partial(next, chain.from_iterable(_chunks(gen.random)))
        """Uniform on [0, 1)."""
        self.z: Callable[[], float] = partial(next, chain.from_iterable(_chunks(gen.standard_normal)))
        """Standard normal."""

    def exp(self, mean: float) -> float:
        """Exponential with the given mean."""
        return -mean * math.log(1.0 - self.u())

    def normal(self, mean: float, sd: float) -> float:
        return mean + sd * self.z()

    def poisson(self, lam: float) -> int:
        """Poisson by inversion (fine for the small means used here)."""
        if lam <= 0.0:
            return 0
        u = self.u()
        k = 0
        p = math.exp(-lam)
        c = p
        while u > c and k < 200:
            k += 1
            p *= lam / k
            c += p
        return k

    def below(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        return min(int(self.u() * n), n - 1)

    def pick(self, cum: Sequence[float]) -> int:
        """Index drawn with cumulative weights ``cum`` (last element = total)."""
        return min(bisect.bisect_right(cum, self.u() * cum[-1]), len(cum) - 1)

    def item(self, seq: Sequence[str]) -> str:
        return seq[self.below(len(seq))]


def cumulative(weights: Sequence[float]) -> list[float]:
    out: list[float] = []
    s = 0.0
    for w in weights:
        s += w
        out.append(s)
    return out


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def scramble(n: int, salt: int) -> int:
    """A bijection on [0, 2**48): unique, random-looking ids from counters."""
    x = (n * 0x9E3779B97F4B + salt) & _MASK48
    return x ^ (x >> 23)
