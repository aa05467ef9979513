"""The sweep's Ray side without a sweep: the janitor that frees the placement groups of stopped
trials, on a private local Ray instance."""

import os
import time

from jem.config import RayConfig
from jem.engine.session import ray_session
from jem.sweep.tune import remove_orphaned_placement_groups


def test_local_session_frees_placement_groups_of_dead_actors_and_restores_the_environment(monkeypatch):
    """What a sweep relies on: a Train controller killed with its Tune trial leaves its workers'
    placement group behind (Ray frees it only with the job); the janitor returns those CPUs."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_session(RayConfig(num_cpus=2, log_to_driver=False)):
        import ray
        from ray.util.placement_group import placement_group

        assert os.environ["RAY_ADDRESS"] == f"127.0.0.1:{os.environ['RAY_GCS_SERVER_PORT']}"
        # Train V2 controller polls reports every 0.1 s instead of 2 s (else every epoch lasts >= 2 s)
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.1"

        @ray.remote(num_cpus=0)
        class Creator:
            def make(self) -> None:
                pg = placement_group([{"CPU": 1}])
                ray.get(pg.ready())
                self.keep = placement_group([{"CPU": 1}])  # pending: nothing left to place it on

        keeper = placement_group([{"CPU": 1}])  # created by the driver: never touched
        ray.get(keeper.ready())
        creator = Creator.remote()
        ray.get(creator.make.remote())
        assert ray.available_resources().get("CPU", 0) == 0
        ray.kill(creator)
        deadline = time.monotonic() + 30
        removed = 0
        while removed < 2 and time.monotonic() < deadline:
            removed += remove_orphaned_placement_groups()
            time.sleep(0.2)
        assert removed == 2
        deadline = time.monotonic() + 10
        while ray.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 1  # the driver's group still holds the other
    assert "RAY_ADDRESS" not in os.environ and "RAY_GCS_SERVER_PORT" not in os.environ
