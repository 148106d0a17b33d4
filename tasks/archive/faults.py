"""Fault injection for the local archive: latency (steady and spikes), 503s, EXECUTING answers,
truncated bodies.

Decisions are deterministic per seed: each one hashes (seed, fault kind, request key, how many
times that key was seen), where the key is the request without astroquery's random cacheBreaker.
So a given sequence of requests meets the same faults on every run, concurrent or not, and a
retried request draws again (a retry can succeed).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field


class FaultConfig(BaseModel):
    """The archive's fault knobs (all off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(0, ge=0, le=60_000, description="delay before every answer")
    spike_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of answers delayed by spike_ms on top")
    spike_ms: float = Field(0, ge=0, le=600_000, description="latency spike; above the client's read timeout "
                                                          "it is a stalled server")
    fail_rate: float = Field(0.0, ge=0.0, le=1.0, description="share of requests answered HTTP 503")
    executing_rate: float = Field(0.0, ge=0.0, le=1.0,
                                  description="share of MAST queries first answered status EXECUTING")
    truncate_rate: float = Field(0.0, ge=0.0, le=1.0,
                                 description="share of bodies cut short (Content-Length stays the full size)")
    seed: int = Field(0, ge=0, description="makes the fault sequence reproducible")

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.fail_rate or self.executing_rate or self.truncate_rate
                    or (self.spike_rate and self.spike_ms))


class FaultInjector:
    def __init__(self, config: FaultConfig):
        self.config = config
        self._seen: Counter[tuple[str, str]] = Counter()
        self._executing_bodies: set[str] = set()
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()  # faults actually injected, by kind (reliability figures)

    def _draw(self, kind: str, key: str, rate: float) -> bool:
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            hit = True
        else:
            with self._lock:
                occurrence = self._seen[(kind, key)]
                self._seen[(kind, key)] += 1
            digest = hashlib.sha256(f"{self.config.seed}|{kind}|{key}|{occurrence}".encode()).digest()
            hit = int.from_bytes(digest[:8], "big") / 2**64 < rate
        if hit:
            with self._lock:
                self.injected[kind] += 1
        return hit

    def delay_s(self, key: str) -> float:
        """Seconds to wait before answering: the steady latency, plus a spike on some requests."""
        delay = self.config.latency_ms / 1000.0
        if self.config.spike_ms and self._draw("spike", key, self.config.spike_rate):
            delay += self.config.spike_ms / 1000.0
        return delay

    def fail(self, key: str) -> bool:
        return self._draw("fail", key, self.config.fail_rate)

    def truncate(self, key: str) -> bool:
        return self._draw("truncate", key, self.config.truncate_rate)

    def executing(self, key: str, exact_body: str) -> bool:
        """EXECUTING before the real answer: the identical re-sent request then gets the answer."""
        with self._lock:
            if exact_body in self._executing_bodies:
                self._executing_bodies.discard(exact_body)
                return False
        if self._draw("executing", key, self.config.executing_rate):
            with self._lock:
                if len(self._executing_bodies) > 100_000:
                    self._executing_bodies.clear()
                self._executing_bodies.add(exact_body)
            return True
        return False
