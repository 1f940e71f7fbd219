"""The web listener: API, event stream and monitoring page.

- :mod:`zkserver.web.app`: the Klein routes of the API and the page;
- :mod:`zkserver.web.sse`: ``GET /devices/events``;
- :mod:`zkserver.web.auth`: the operator token and the session cookie;
- :mod:`zkserver.web.openapi`: the API description.
"""

from zkserver.web.app import ApiError, PullControl, WebApp
from zkserver.web.auth import TokenAuth, load_or_create_token
from zkserver.web.sse import EventStream

__all__ = ["ApiError", "EventStream", "PullControl", "TokenAuth", "WebApp", "load_or_create_token"]
