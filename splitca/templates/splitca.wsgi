"""mod_wsgi entry point for the splitca CA: Apache's WSGIScriptAlias points at this file."""

from splitca.wsgi import application  # noqa: F401 - mod_wsgi looks up `application`
