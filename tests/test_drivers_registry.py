"""Drivers register themselves (drivers/_registry.py): the config's ``devices`` union is built
from the registry, each entry's model carries its own ``driver`` tag, and a driver added to the
registry gets its sources built without any other change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from config._schema import Device, device_union
from drivers import (
    DRIVER_MODELS,
    DRIVERS,
    DeviceConfig,
    Driver,
    Source,
    SourceContext,
    make_sources,
)
from mrv_core import Metrics


def test_the_config_devices_union_is_the_registry() -> None:
    schema = TypeAdapter(Device).json_schema()
    tags = set(schema["discriminator"]["mapping"])
    assert tags == {d.name for d in DRIVERS} == set(DRIVER_MODELS)
    assert len(DRIVERS) == len(tags)  # one entry per driver


@pytest.mark.parametrize("entry", DRIVERS, ids=lambda d: d.name)
def test_each_entry_model_carries_its_own_driver_tag(entry: Driver[DeviceConfig]) -> None:
    assert get_args(entry.model.model_fields["driver"].annotation) == (entry.name,)
    assert issubclass(entry.model, DeviceConfig)


class FakeDevice(DeviceConfig):
    driver: Literal["fake"]
    name: str
    points: list[str] = []


class FakeListener(DeviceConfig):
    driver: Literal["fake_listener"]
    name: str
    listen: str
    points: list[str] = []


class FakeSource:
    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self) -> None:
        return None


def _one(devs: Sequence[FakeDevice], ctx: SourceContext) -> Source:
    (d,) = devs
    return FakeSource(d.name)


def _group(devs: Sequence[FakeListener], ctx: SourceContext) -> Source:
    return FakeSource("+".join(d.name for d in devs))


def _listen(d: FakeListener) -> str:
    return d.listen


FAKE = Driver("fake", FakeDevice, _one)
FAKE_LISTENER = Driver("fake_listener", FakeListener, _group, group=_listen)


async def _sink(readings: object) -> None: ...


def test_a_registered_driver_gets_its_sources_in_device_order_grouped_ones_last() -> None:
    devices: list[DeviceConfig] = [
        FakeListener(driver="fake_listener", name="l1", listen="a"),
        FakeDevice(driver="fake", name="d1"),
        FakeListener(driver="fake_listener", name="l2", listen="b"),
        FakeDevice(driver="fake", name="d2"),
        FakeListener(driver="fake_listener", name="l3", listen="a"),
    ]
    sources = make_sources(devices, _sink, Metrics(), drivers=(*DRIVERS, FAKE, FAKE_LISTENER))
    assert [s.name for s in sources] == ["d1", "d2", "l1+l3", "l2"]


def test_a_device_model_outside_the_registry_is_refused() -> None:
    with pytest.raises(TypeError, match="no source for device config FakeDevice"):
        make_sources([FakeDevice(driver="fake", name="d1")], _sink, Metrics())


def test_the_devices_union_takes_a_newly_registered_driver() -> None:
    adapter: TypeAdapter[DeviceConfig] = TypeAdapter(device_union((*DRIVERS, FAKE)))
    dev = adapter.validate_python({"driver": "fake", "name": "x"})
    assert isinstance(dev, FakeDevice) and dev.name == "x"
    with pytest.raises(ValidationError):  # and the registry's union alone does not
        TypeAdapter(Device).validate_python({"driver": "fake", "name": "x"})
