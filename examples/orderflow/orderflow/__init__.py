"""orderflow: the company's order pipeline (shop API, open API, CRM, MES) built on obskit.

Processes, each started by the ``orderflow`` command:

* ``api``    — ingress (FastAPI): order creation, order status, status page (``orderflow.api``)
* ``relay``  — CRM outbox relay: PostgreSQL outbox → RabbitMQ (``orderflow.relay``)
* ``status`` — CRM status consumer: MES status events → status history (``orderflow.status``)
* ``mes``    — stateless MES workers: price, schedule, print (``orderflow.mes``)
"""

__version__ = "0.1.0"
