"""The API read goals, from a result of `benchmarks/api_load.py`, at 64 connections: each read serves at
least the requests per second of a plain FastAPI route returning the same body as a dict, with a p99 at
most three times its median, and on PostgreSQL at least 0.7 of the same read on SQLite (the embedded
default) in the same run. At 64 connections in a closed loop a request waits 64 / throughput on average,
so the latency goal is the spread, not a number of milliseconds."""

from dataclasses import dataclass

GOAL = {"over_plain": 1.0, "p99_over_p50": 3.0, "postgres_over_embedded": 0.7}
AT = "64"  # connections
BACKENDS = {"embedded": "SQLite", "postgres": "PostgreSQL"}
READS = {
    "job": "/v1/jobs/{id}",
    "jobs-20": "/v1/jobs?limit=20",
    "jobs-100": "/v1/jobs?limit=100",
    "files-100": "/v1/files?limit=100",
}


@dataclass(frozen=True)
class Figure:
    backend: str  # "postgres / embedded" for the ratio of the two
    read: str  # a key of READS
    measure: str  # "/ plain FastAPI", "p99 / p50", "req/s"
    measured: float
    goal: float
    at_least: bool  # else at most

    @property
    def met(self) -> bool:
        return self.measured >= self.goal if self.at_least else self.measured <= self.goal

    @property
    def name(self) -> str:
        return f"{self.backend} GET {READS[self.read]} at {AT} connections: {self.measure}"

    @property
    def goal_text(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.goal:g}x"


def figures(result: dict) -> list[Figure]:
    """Each goal's figure for the reads and backends the result holds."""
    found = []
    for read in READS:
        runs = {backend: result[backend][read][AT] for backend in BACKENDS if read in result.get(backend, {})}
        for backend, run in runs.items():
            api = run["api"]
            found.append(
                Figure(backend, read, "/ plain FastAPI", run["over_plain"], GOAL["over_plain"], True)
            )
            spread = round(api["p99_ms"] / api["p50_ms"], 2) if api["p50_ms"] else float("inf")
            found.append(Figure(backend, read, "p99 / p50", spread, GOAL["p99_over_p50"], False))
        if len(runs) == len(BACKENDS):
            ratio = _rate(runs["postgres"]) / _rate(runs["embedded"])
            goal = GOAL["postgres_over_embedded"]
            found.append(Figure("postgres / embedded", read, "req/s", round(ratio, 2), goal, True))
    return found


def _rate(run: dict) -> float:
    return run["api"]["requests_per_second"]
