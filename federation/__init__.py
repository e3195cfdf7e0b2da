"""Federated training service: Flower rounds across sites, a signed prior registry and its client.

* :mod:`.server_app`, :mod:`.client_app` — the Flower ServerApp (rounds, then publish
  the aggregated prior) and ClientApp (a site's local step; what it may send).
* :mod:`.server_config` — the run config (one table of keys and defaults).
* :mod:`.recipe` — the training recipe (rounds, local steps, learning rate) rounds use by default.
* :mod:`.strategies` — which Flower strategy aggregates (FedAvg, FedProx, ...).
* :mod:`.runtime` — SuperLink/SuperNode/``flwr run`` as processes, the generated App folder.
* :mod:`.publish` — publishing an artifact to the registry, next version numbers.
* :mod:`.inprocess` — a Flower grid in one process (evaluation rounds, unit tests).

* :mod:`.signing` — Ed25519 keys and signatures over a prior's manifest bytes.
* :mod:`.store` — the registry's storage: one directory per published version, immutable.
* :mod:`.registry` — the FastAPI app (``twinstream federation serve``).
* :mod:`.client` — download a prior from a registry and verify it (signature, sha256,
  feature schema) before anything uses it.

The worker's periodic pull and hot swap of the prior of live twins uses the client but
lives with the worker (:mod:`twinstream.streams.prior_pull`): this package does not
import the stream processors.
"""
