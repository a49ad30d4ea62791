"""The core: ports (CAStore, Signer), CSR policy and autosign strategies, audit records and the use cases."""
