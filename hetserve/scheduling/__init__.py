"""Scheduling policies (plain Python, no ray) shared by the simulator and the live router."""
