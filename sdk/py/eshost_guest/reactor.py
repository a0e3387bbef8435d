"""eshost_guest.reactor: writing an eshost reactor in Python.

A reactor receives the recorded events it subscribes to and answers each
with actions for the host to perform. The events it reads are dataclasses
(the class name is the event's name; fields are camelCase in JSON), with a
handler for each::

    checkout = Reactor(
        "checkout", "0.1.0",
        subscriptions={"Order": ["OrderPlaced"], "FlashSaleItem": ["ItemPurchased"]},
        sinks=["confirmations"],
    )

    @checkout.on
    def order_placed(event: Event, placed: OrderPlaced, actions: Actions) -> None:
        actions.correlate(f"order:{event.id}").send(
            "FlashSaleItem", placed.item_id, "PurchaseItem",
            {"buyerId": placed.buyer_id, "quantity": placed.quantity},
        ).schedule(f"expire:{event.id}", "Order", event.id, "ExpireOrder", {}, after_ms=900_000)

    Reactor = checkout.exports()

The guest module names what the `reactor-guest` world exports: the class
`Reactor` for the interface's functions. Build with componentize-py, world
`reactor-guest`, and ``--stub-wasi``.

A handler that raises refuses the event: the host parks it with the
message, and performs nothing of it. So does a payload that does not fit
its dataclass. An event with no handler calls for nothing. The guest
computes; the host acts, each action once.
"""

import dataclasses
import json
import typing

from componentize_py_types import Err
from wit_world.exports import reactor as wit

from eshost_guest import InvalidPayload, from_json, to_json

__all__ = ["Reactor", "Actions", "Event"]


@dataclasses.dataclass(frozen=True)
class Event:
    """One recorded event, as the reactor receives it (its payload goes to
    the handler as its dataclass)."""

    #: Its position in the global log.
    position: int
    aggregate: str
    id: str
    #: 1-based within its stream.
    sequence: int
    name: str
    #: The metadata: ``commandId``, ``correlationId``, ``causationId``, ...
    metadata: dict
    #: When it was recorded, in milliseconds since the Unix epoch.
    recorded_at: int

    @property
    def correlation_id(self) -> typing.Optional[str]:
        """The correlation id of the command that recorded it, if any."""
        value = self.metadata.get("correlationId")
        return value if isinstance(value, str) else None


class Actions:
    """The actions one event calls for, in order. Payloads and bodies are
    dataclasses (camelCase in JSON) or anything ``json.dumps`` takes."""

    def __init__(self) -> None:
        self.list: list = []
        self._correlation: typing.Optional[str] = None

    def correlate(self, correlation_id: str) -> "Actions":
        """The correlation id of the commands added after this: the events
        they record carry it. Without one, a command carries the event's own."""
        self._correlation = correlation_id
        return self

    def send(self, aggregate: str, id: str, command: str, payload) -> "Actions":
        """Send a command now."""
        self.list.append(wit.Action_Send(self._command(aggregate, id, command, payload)))
        return self

    def schedule(
        self,
        key: str,
        aggregate: str,
        id: str,
        command: str,
        payload,
        *,
        at_ms: typing.Optional[int] = None,
        after_ms: typing.Optional[int] = None,
    ) -> "Actions":
        """Send a command when it is due: ``at_ms`` (milliseconds since the
        Unix epoch) or ``after_ms`` the event, exactly one of them, under
        ``key`` (scheduling a key again replaces its timer)."""
        if (at_ms is None) == (after_ms is None):
            raise ValueError(f"timer {key!r}: give exactly one of at_ms and after_ms")
        due = wit.Due_At(at_ms) if at_ms is not None else wit.Due_After(after_ms)
        command = self._command(aggregate, id, command, payload)
        self.list.append(wit.Action_Schedule(wit.Schedule(key=key, due=due, command=command)))
        return self

    def cancel(self, key: str) -> "Actions":
        """Cancel the timer under ``key``, if there is one."""
        self.list.append(wit.Action_Cancel(key))
        return self

    def deliver(self, sink: str, body) -> "Actions":
        """Deliver ``body`` to the sink the operator configured under ``sink``."""
        self.list.append(wit.Action_Deliver(wit.Delivery(sink=sink, body=to_json(body))))
        return self

    def _command(self, aggregate: str, id: str, name: str, payload) -> "wit.Command":
        return wit.Command(
            aggregate=aggregate,
            id=id,
            name=name,
            payload=to_json(payload),
            correlation_id=self._correlation,
        )


class Reactor:
    """One reactor: its name, version, subscriptions, sinks and handlers."""

    def __init__(
        self,
        name: str,
        version: str,
        subscriptions: typing.Dict[str, typing.List[str]],
        sinks: typing.Sequence[str] = (),
    ):
        self.name = name
        self.version = version
        self.subscriptions = subscriptions
        self.sinks = list(sinks)
        self.handlers = {}

    def on(self, handler):
        """Registers a handler, ``(event, payload, actions) -> None``, for
        the event dataclass its second parameter is annotated with."""
        hints = typing.get_type_hints(handler)
        hints.pop("return", None)
        cls = list(hints.values())[1]
        self.handlers[cls.__name__] = (cls, handler)
        return handler

    def exports(self):
        """The class the `reactor` interface exports."""
        definition = self

        class Exports:
            def describe(self) -> wit.Manifest:
                return wit.Manifest(
                    name=definition.name,
                    version=definition.version,
                    subscriptions=[
                        wit.Subscription(aggregate=aggregate, events=list(events))
                        for aggregate, events in definition.subscriptions.items()
                    ],
                    sinks=definition.sinks,
                )

            def react(self, recorded: wit.RecordedEvent) -> list:
                if recorded.name not in definition.handlers:
                    return []
                label = f"{recorded.aggregate} {recorded.name} #{recorded.sequence}"
                cls, handler = definition.handlers[recorded.name]
                try:
                    payload = from_json(cls, json.loads(recorded.payload))
                    metadata = json.loads(recorded.metadata)
                except (ValueError, InvalidPayload) as e:
                    raise Err(f"{label}: {e}")
                event = Event(
                    position=recorded.position,
                    aggregate=recorded.aggregate,
                    id=recorded.id,
                    sequence=recorded.sequence,
                    name=recorded.name,
                    metadata=metadata if isinstance(metadata, dict) else {},
                    recorded_at=recorded.recorded_at,
                )
                actions = Actions()
                try:
                    handler(event, payload, actions)
                except Exception as e:
                    # A refusal of the event: the host parks it with this reason.
                    raise Err(f"{label}: {e}")
                return actions.list

        return Exports
