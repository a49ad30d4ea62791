"""Registry backends reached over the network: HTTP classifier and S3."""
