"""Use cases: short functions over the injected ports (store, signer, policy, audit, clock)."""
