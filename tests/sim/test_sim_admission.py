"""The router's admission queue in the simulator: late binding engages only when instances are
full, every request is still served, and a bounded queue refuses the excess."""

from __future__ import annotations

import numpy as np
from sim_factories import MAX_MODEL_LEN, make_instances

from hetserve.scheduling import make_policy
from hetserve.scheduling.admission import AdmissionConfig, AdmissionQueue
from hetserve.sim import Simulator, poisson_requests


def _run(rate: float, admission_config: AdmissionConfig | None, n: int = 400):
    reqs = poisson_requests(rate, n, 200, 100, MAX_MODEL_LEN, seed=3)
    instances = make_instances([1.0, 4.0], max_num_seqs=8)
    policy = make_policy("hetero", seed=0)
    admission = AdmissionQueue(policy, admission_config) if admission_config else None
    sim = Simulator(instances, policy, reqs, admission=admission)
    return sim.run(), sim, admission


def test_light_load_is_unchanged_by_late_binding():
    plain, _, _ = _run(2.0, None)
    late, _, adm = _run(2.0, AdmissionConfig(max_queue_requests=10**6))
    assert adm.num_queued_total == 0
    np.testing.assert_array_equal(plain.instance_of, late.instance_of)
    np.testing.assert_allclose(plain.first_token_s, late.first_token_s)


def test_overload_queues_at_the_router_and_serves_everyone():
    late, sim, adm = _run(200.0, AdmissionConfig(max_queue_requests=10**6))
    assert adm.num_queued_total > 100 and len(adm) == 0
    assert (late.instance_of >= 0).all() and not np.isnan(late.finish_s).any()
    # Never more than the batch slots outstanding on an instance: no engine-side queue.
    assert max(row[4] for tl in late.timeline for row in tl) <= 8


def test_bounded_queue_refuses_the_excess():
    res, sim, adm = _run(200.0, AdmissionConfig(max_queue_requests=20))
    assert sim.num_refused > 0 and adm.num_refused == sim.num_refused
    assert (res.instance_of == -1).sum() == sim.num_refused
