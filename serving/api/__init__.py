"""The HTTP API of the decision service (FastAPI): `create_app(settings)`."""

from serving.api.app import create_app

__all__ = ["create_app"]
