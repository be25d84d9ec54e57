"""Engines behind one ABC (base.py); batching.py is the pure step shared with the simulator;
factory.py builds the engine a deployment names (`create_engine(kind, spec)`)."""

from hetserve.engines.base import (
    Engine,
    EngineDeadError,
    EngineError,
    GenerateRequest,
    RequestTooLongError,
    TokenChunk,
)
from hetserve.engines.factory import ENGINE_KINDS, EngineSpec, create_engine

__all__ = [
    "ENGINE_KINDS",
    "Engine",
    "EngineDeadError",
    "EngineError",
    "EngineSpec",
    "GenerateRequest",
    "RequestTooLongError",
    "TokenChunk",
    "create_engine",
]
