"""The control plane: a FastAPI application served by uvicorn inside the broker's event loop.

``create_app(broker)`` builds the application; ``HttpServer`` is the broker Component serving it.
"""

from api.app import create_app

__all__ = ["create_app"]
