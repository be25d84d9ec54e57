"""Placement planner: per-node TP degrees and instance counts, searched exhaustively. No ray import."""

from hetserve.planner.candidates import enumerate_candidates, group_pools
from hetserve.planner.cover import CoverResult, cheapest_cover
from hetserve.planner.search import Objective, search_plan

__all__ = ["CoverResult", "Objective", "cheapest_cover", "enumerate_candidates", "group_pools", "search_plan"]
