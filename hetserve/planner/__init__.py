"""Placement planner: per-node TP degrees and instance counts, searched exhaustively. No ray import."""

from hetserve.planner.candidates import enumerate_candidates, group_pools
from hetserve.planner.cover import CoverResult, cheapest_cover
from hetserve.planner.plan_file import load_plan, plan_to_json
from hetserve.planner.search import Objective, search_plan

__all__ = [
    "CoverResult",
    "Objective",
    "cheapest_cover",
    "enumerate_candidates",
    "group_pools",
    "load_plan",
    "plan_to_json",
    "search_plan",
]
