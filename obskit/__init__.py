"""obskit: one call makes a service's orders observable.

    import obskit
    obskit.init("mes")
    log = obskit.get_logger(__name__)

    with obskit.order_context(order_id, channel="b2c"):
        log.info("pricing order")          # carries trace_id, span_id, order_id, channel

See docs/ for the configuration table, the metrics catalogue and the integrations.
"""

from obskit._context import add_request_fields, current_order, current_request_id, order_context
from obskit._decorators import traced
from obskit._init import Handle, get_handle, init, shutdown
from obskit._logging import get_logger
from obskit._orders import STAGES, TERMINAL_STAGES, record_stage
from obskit.exposition import metrics_asgi_app, metrics_wsgi_app

__version__ = "0.1.0"

__all__ = [
    "STAGES",
    "TERMINAL_STAGES",
    "Handle",
    "__version__",
    "add_request_fields",
    "current_order",
    "current_request_id",
    "get_handle",
    "get_logger",
    "init",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "order_context",
    "record_stage",
    "shutdown",
    "traced",
]
