"""Failure detection at the router (plain Python): dead, stale reports, circuit breaker; and the
front door's key handling."""

from __future__ import annotations

import pytest

from hetserve.serving.door import Door, digest, load_api_key_digests
from hetserve.serving.health import BreakerState, HealthConfig, InstanceHealth


def test_dead_instance_leaves_routing_at_once():
    h = InstanceHealth()
    h.add("a", 0.0)
    assert h.routable("a", 0.0)
    h.on_dead("a")
    assert not h.routable("a", 0.0) and h.describe("a", 0.0)["dead"]


def test_stopped_reports_take_an_instance_out_unless_every_report_stopped():
    h = InstanceHealth(HealthConfig(report_timeout_s=1.5))
    h.add("a", 0.0)
    h.add("b", 0.0)
    for t in (0.5, 1.0, 1.5, 2.0):
        h.on_report("b", t)
    h.on_report("a", 0.4)
    assert h.routable("a", 1.8)
    assert not h.routable("a", 2.0) and h.is_stale("a", 2.0)  # 1.6 s without a report, b still reports
    h.on_report("a", 2.1)
    assert h.routable("a", 2.1)
    # Neither reports (the controller stalled, not the instances): both stay routable.
    assert h.routable("a", 9.0) and h.routable("b", 9.0)


def test_breaker_opens_after_repeated_failures_and_half_opens_for_one_probe():
    h = InstanceHealth(HealthConfig(failure_threshold=3, open_s=5.0))
    h.add("a", 0.0)
    h.on_failure("a", 1.0)
    h.on_failure("a", 1.1)
    assert h.routable("a", 1.2)
    h.on_failure("a", 1.2)
    assert h.breaker("a", 1.3) == BreakerState.OPEN and not h.routable("a", 6.1)
    assert h.breaker("a", 6.3) == BreakerState.HALF_OPEN and h.routable("a", 6.3)
    h.on_bind("a", 6.3)  # the probe
    assert not h.routable("a", 6.4)
    h.on_failure("a", 6.5)  # probe failed: open again
    assert h.breaker("a", 7.0) == BreakerState.OPEN
    h.on_bind("a", 11.6)
    h.on_success("a")
    assert h.breaker("a", 11.7) == BreakerState.CLOSED and h.routable("a", 11.7)


def test_api_keys_from_env_and_file_checked_by_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("HS_KEYS", "k1, k2")
    keyfile = tmp_path / "keys"
    keyfile.write_text("# comment\nk3\n\n")
    digests = load_api_key_digests("HS_KEYS", str(keyfile))
    assert set(digests) == {digest("k1"), digest("k2"), digest("k3")}
    door = Door(key_digests=digests)
    assert door.authorized({b"authorization": b"Bearer k3"})
    assert door.authorized({b"authorization": b"bearer k1"})
    assert not door.authorized({b"authorization": b"Bearer nope"})
    assert not door.authorized({b"authorization": b"Basic k1"})
    assert not door.authorized({})
    assert Door().authorized({})  # no keys configured: open
    monkeypatch.delenv("HS_KEYS")
    with pytest.raises(ValueError, match="HS_KEYS"):
        load_api_key_digests("HS_KEYS", None)
    with pytest.raises(ValueError, match="cannot read"):
        load_api_key_digests(None, str(tmp_path / "missing"))


def test_the_door_sheds_generation_requests_before_reading_them():
    """While the router says its queue is full, POSTs to the generation paths get the router's 429
    (status, OpenAI body, Retry-After) without the app running or the body being read; other
    paths and methods pass, and with no refusal everything passes."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from hetserve.serving import door as door_module
    from hetserve.serving.errors import RequestError

    reached: list[str] = []

    async def endpoint(request):
        reached.append(request.url.path)
        await request.body()
        return JSONResponse({"ok": True})

    paths = ["/v1/completions", "/v1/chat/completions", "/v1/models"]
    app = Starlette(routes=[Route(p, endpoint, methods=["GET", "POST"]) for p in paths])
    app.add_middleware(door_module.DoorMiddleware)
    full: list[RequestError] = []
    seen_arriving: list[int] = []

    def shed(arriving: int) -> RequestError | None:
        seen_arriving.append(arriving)
        return full[0] if full else None

    door_module.configure((), None, shed)
    try:
        with TestClient(app) as client:
            assert client.post("/v1/completions", json={"prompt": "x"}).status_code == 200
            assert door_module._CURRENT.arriving == 0  # its body was read: no longer arriving
            full.append(RequestError(429, "the service is at capacity", "rate_limit_exceeded", None, "queue_full", 2.2))
            r = client.post("/v1/chat/completions", content=b"not even json")
            assert r.status_code == 429 and r.headers["retry-after"] == "3"
            assert r.json()["error"]["code"] == "queue_full" and "server-timing" in r.headers
            assert reached == ["/v1/completions"]  # the refused request never reached the app
            assert client.get("/v1/models").status_code == 200
            assert client.get("/v1/completions").status_code == 200  # only POSTs are shed
            assert seen_arriving == [0, 0]
    finally:
        door_module.configure((), None, None)
