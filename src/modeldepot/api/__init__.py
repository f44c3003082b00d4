"""The REST API (FastAPI) and the web page: ``create_app(manager)``, ``serve(...)``, ``run_demo(...)``.

Importing this package imports FastAPI; the CLI imports it only inside ``serve`` / ``demo``.
"""

from modeldepot.api._security import check_bind
from modeldepot.api.app import create_app
from modeldepot.api.demo import Demo, run_demo, start_demo
from modeldepot.api.errors import STATUS_FOR, status_for
from modeldepot.api.serve import build_app, make_server, serve

__all__ = [
    "STATUS_FOR",
    "Demo",
    "build_app",
    "check_bind",
    "create_app",
    "make_server",
    "run_demo",
    "serve",
    "start_demo",
    "status_for",
]
