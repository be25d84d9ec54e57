"""Engines behind one ABC (base.py); batching.py is the pure step shared with the simulator.

vllm is imported only inside engines/vllm_engine.py, lazily.
"""
