"""The ingress: shop API (B2C), open API (B2B), order status, status page, health, metrics."""
