"""The web listener: API, event stream and monitoring page."""
