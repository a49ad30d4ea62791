"""The split-CA edge: sync-crl, apache-config, the outbound HTTP client and the Apache templates."""
