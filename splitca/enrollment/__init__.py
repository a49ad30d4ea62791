"""Enrollment context: the registry protocol, register/cloud-config use cases, registry backends."""
