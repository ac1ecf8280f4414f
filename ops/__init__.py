"""The operations layer: plain Python, no Django.  Platform drivers, the
backup catalog, runbooks and log queries live here and take their
configuration as arguments, so they can be tested without HTTP."""
