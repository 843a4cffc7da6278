from decimal import Decimal

import pytest

from orderflow import pricing


def test_quote_follows_the_documented_formula() -> None:
    q = pricing.quote(100.0, "PLA", "draft", 2)
    material = 100 * 1.24 / 1000 * 25.0 * 1.0
    machine = 100 / 30.0 * pricing.MACHINE_RATE_PER_HOUR
    assert q.price == Decimal(str(round((material + machine) * 2 * 1.3, 2)))
    assert q.print_minutes == round(100 / 30.0 * 2 * 60, 1)


def test_finer_quality_costs_more_and_prints_longer() -> None:
    draft = pricing.quote(50, "ABS", "draft", 1)
    fine = pricing.quote(50, "ABS", "fine", 1)
    assert fine.price > draft.price and fine.print_minutes > draft.print_minutes


def test_minimum_price_and_unprintable() -> None:
    assert pricing.quote(0.1, "PLA", "draft", 1).price == Decimal("5.00")
    with pytest.raises(pricing.Unprintable, match="build volume"):
        pricing.quote(pricing.MAX_PART_VOLUME_CM3 + 1, "PLA", "draft", 1)
