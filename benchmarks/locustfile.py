"""Locust load for the fusionrec service (run by benchmarks/serving.py as its own process).

Never import this next to fusionrec: locust monkey-patches the standard library (gevent).
Each simulated user sends requests at a fixed rate (FUSIONREC_RATE_PER_USER per second):
80 % recommend for a known user, 10 % fold-in of an unknown user, 10 % similar.
Ids come from the JSON file in FUSIONREC_LOAD_IDS ({"users": [...], "items": [...]}).
"""

from __future__ import annotations

import json
import os
import random

from locust import HttpUser, constant_throughput, task

IDS = json.loads(open(os.environ["FUSIONREC_LOAD_IDS"]).read())  # noqa: SIM115  (read once at start)
RATE = float(os.environ.get("FUSIONREC_RATE_PER_USER", "10"))


class Client(HttpUser):
    wait_time = constant_throughput(RATE)

    @task(8)
    def recommend_known(self) -> None:
        self.client.post("/recommend", json={"user_id": random.choice(IDS["users"]), "k": 10, "explain": False},
                         name="recommend:user")

    @task(1)
    def recommend_fold_in(self) -> None:
        recent = random.sample(IDS["items"], 5)
        self.client.post("/recommend", json={"user_id": "load-guest", "k": 10, "recent_items": recent,
                                             "explain": False}, name="recommend:fold_in")

    @task(1)
    def similar(self) -> None:
        self.client.post("/similar", json={"item_id": random.choice(IDS["items"]), "k": 10}, name="similar")
