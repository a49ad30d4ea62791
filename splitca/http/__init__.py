"""The HTTP edge: WSGI app (requests, routes, auth, error map), routes per area, embedded server."""
