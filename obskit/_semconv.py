"""OpenTelemetry semantic-convention names obskit writes (messaging v1.27+ names).

One place for them, so the raw pika/aio-pika integrations and ``obskit.rabbitmq`` produce spans
that look alike in Tempo.
"""

from opentelemetry.trace import SpanKind

# The span kinds, read once for every span start: an Enum member read is ~60 ns on Python 3.11.
KIND_SERVER = SpanKind.SERVER
KIND_CLIENT = SpanKind.CLIENT
KIND_PRODUCER = SpanKind.PRODUCER
KIND_CONSUMER = SpanKind.CONSUMER

MESSAGING_SYSTEM_RABBITMQ = "rabbitmq"
#: Span/metric name for the nameless default exchange.
DEFAULT_EXCHANGE = "amq.default"

ATTR_SYSTEM = "messaging.system"
ATTR_DESTINATION = "messaging.destination.name"
ATTR_SUBSCRIPTION = "messaging.destination.subscription.name"
ATTR_OPERATION_TYPE = "messaging.operation.type"
ATTR_OPERATION_NAME = "messaging.operation.name"
ATTR_MESSAGE_ID = "messaging.message.id"
ATTR_CONVERSATION_ID = "messaging.message.conversation_id"
ATTR_BODY_SIZE = "messaging.message.body.size"
ATTR_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
ATTR_DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"
ATTR_REDELIVERED = "messaging.rabbitmq.message.redelivered"
#: obskit: the handler attempt, 1-based.
ATTR_DELIVERY_COUNT = "messaging.message.delivery_count"
ATTR_SERVER_ADDRESS = "server.address"
ATTR_SERVER_PORT = "server.port"
ATTR_ERROR_TYPE = "error.type"
