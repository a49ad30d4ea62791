"""Registry backends (implementations of the Registry protocol): a local directory, an HTTP classifier, S3."""
