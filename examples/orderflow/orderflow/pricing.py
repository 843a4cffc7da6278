"""The MES pricing formula — the one place that says what an order costs and how long it prints.

For one part of ``volume_cm3`` in ``material`` at ``quality``, times ``quantity``::

    mass_kg        = volume_cm3 × density_g_cm3 / 1000
    material_cost  = mass_kg × price_per_kg × quality.material_factor   (finer = more supports)
    print_hours    = volume_cm3 / quality.speed_cm3_per_h
    machine_cost   = print_hours × MACHINE_RATE_PER_HOUR
    price          = max(MIN_PRICE, (material_cost + machine_cost) × quantity × (1 + MARGIN))

A part larger than ``MAX_PART_VOLUME_CM3`` (the printers' build volume) cannot be printed: the
order fails with that reason instead of being priced.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

#: material -> (density g/cm³, price per kg in EUR)
MATERIALS: dict[str, tuple[float, float]] = {
    "PLA": (1.24, 25.0),
    "ABS": (1.04, 28.0),
    "PETG": (1.27, 30.0),
    "RESIN": (1.10, 80.0),
}
#: quality -> (material factor, print speed cm³ per hour)
QUALITIES: dict[str, tuple[float, float]] = {
    "draft": (1.0, 30.0),
    "standard": (1.15, 18.0),
    "fine": (1.35, 8.0),
}
MACHINE_RATE_PER_HOUR = 4.0
MARGIN = 0.30
MIN_PRICE = 5.0
MAX_PART_VOLUME_CM3 = 8000.0  # a 20 × 20 × 20 cm build volume
CURRENCY = "EUR"


class Unprintable(ValueError):
    """The order cannot be produced; ``str(exc)`` is the reason shown to the customer."""


@dataclass(frozen=True)
class Quote:
    price: Decimal
    currency: str
    print_minutes: float
    material_kg: float


def quote(volume_cm3: float, material: str, quality: str, quantity: int) -> Quote:
    if volume_cm3 > MAX_PART_VOLUME_CM3:
        raise Unprintable(f"part volume {volume_cm3:g} cm3 exceeds the build volume "
                          f"({MAX_PART_VOLUME_CM3:g} cm3)")
    density, per_kg = MATERIALS[material]
    factor, speed = QUALITIES[quality]
    mass_kg = volume_cm3 * density / 1000
    material_cost = mass_kg * per_kg * factor
    hours = volume_cm3 / speed
    unit = material_cost + hours * MACHINE_RATE_PER_HOUR
    price = max(MIN_PRICE, unit * quantity * (1 + MARGIN))
    return Quote(
        price=Decimal(str(price)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP),
        currency=CURRENCY,
        print_minutes=round(hours * quantity * 60, 1),
        material_kg=round(mass_kg * quantity, 3),
    )
