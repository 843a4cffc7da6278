"""The public surface of obskit.rabbitmq is exactly __all__."""

import obskit.rabbitmq as rmq


def test_all_matches_public_names():
    public = {n for n in dir(rmq) if not n.startswith("_") and n not in {"errors"}}
    assert set(rmq.__all__) == public
