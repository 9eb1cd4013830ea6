"""The speed figures of `make bench` against their goals, read from the last results of the benchmarks that
measure them side by side (`epoch_cost`, `api_load`, `transfer`, `pickup`): one table, written to
`benchmarks/results/speed.json` too.

    .venv/bin/python -m benchmarks.speed
"""

import json

from benchmarks import api_goals
from benchmarks.common import RESULTS, write_result


def read(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rows() -> list[dict]:
    """(figure, goal, measured, met) for each goal whose benchmark has a result."""
    figures = []

    def add(figure: str, goal: str, measured: float, met: bool, unit: str = "x") -> None:
        figures.append({"figure": figure, "goal": goal, "measured": f"{measured:g}{unit}", "met": met})

    if epoch := read("epoch_cost"):
        ratios = epoch["ratios"]
        add(
            "service epoch / student-alone plain loop (cache read)",
            "<= 1.05x",
            ratios["service_over_plain_student"],
            ratios["service_over_plain_student"] <= 1.05,
        )
        add(
            "  the same with the cache's one pass spread over the run",
            "(context)",
            ratios["service_with_the_cache_pass_over_plain_student"],
            True,
        )
        add(
            "naive KD loop epoch / service epoch",
            ">= 1.8x",
            ratios["naive_kd_over_service"],
            ratios["naive_kd_over_service"] >= 1.8,
        )
        add(
            "`auto` T job / one run (5 one-epoch trials + the run)",
            "(context)",
            ratios["auto_over_one_run"],
            True,
        )
        add(
            "the same job again over HTTP, worker time / first",
            "(context)",
            ratios["http_second_over_first"],
            True,
        )
    for figure in api_goals.figures(read("api_load")):
        add(figure.name, figure.goal_text, figure.measured, figure.met)
    if transfer := read("transfer"):
        rss_goal = transfer["goal_rss_growth_mib"]
        for direction in ("download", "upload"):
            figures_of = transfer[direction]
            ratio, goal = figures_of["ratio_to_cp"], figures_of["goal_ratio_to_cp"]
            add(f"1 GiB {direction} / cp on the same disk", f">= {goal}x", ratio, ratio >= goal)
            growth = figures_of["api_rss_growth_mib"]
            add(
                f"  API peak RSS growth during the {direction}",
                f"< {rss_goal} MiB",
                growth,
                growth < rss_goal,
                " MiB",
            )
    if pickup := read("pickup"):
        for backend in ("embedded", "redis"):
            if backend in pickup:
                median = pickup[backend]["median_seconds"]
                add(f"pick-up latency, {backend} (median)", "< 0.5 s", median, median < 0.5, " s")
    return figures  # fmt: skip


def main() -> None:
    table = rows()
    width = max(len(row["figure"]) for row in table)
    for row in table:
        verdict = "" if row["goal"] == "(context)" else ("met" if row["met"] else "MISSED")
        print(f"{row['figure']:<{width}}  {row['goal']:>9}  {row['measured']:>10}  {verdict}")
    write_result(RESULTS / "speed.json", {"benchmark": "speed", "figures": table})


if __name__ == "__main__":
    main()
