"""The operator's administration of one CA: the Admin port the CLI uses, its local and remote implementations."""
