"""Federated training service: a signed prior registry and the twins' prior pull.

* :mod:`.signing` — Ed25519 keys and signatures over a prior's manifest bytes.
* :mod:`.store` — the registry's storage: one directory per published version, immutable.
* :mod:`.registry` — the FastAPI app (``twinstream federation serve``).
* :mod:`.client` — download a prior from a registry and verify it (signature, sha256,
  feature schema) before anything uses it.
* :mod:`.pull` — the worker's periodic pull and hot swap of the prior of live twins.
"""
