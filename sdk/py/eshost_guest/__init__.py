"""eshost_guest: writing an eshost aggregate in Python.

An aggregate is its commands and events as dataclasses (the class name is
the command's or event's name; fields are camelCase in JSON), a handler per
command and an applier per event::

    sale = Aggregate("FlashSaleItem", "0.1.0", FlashSaleItem)

    @sale.command
    def create_flash_sale(item: FlashSaleItem, command: CreateFlashSale) -> list:
        return [FlashSaleCreated(item_id=item.id, initial_stock=command.initial_stock)]

    @sale.event
    def flash_sale_created(item: FlashSaleItem, event: FlashSaleCreated) -> None:
        item.stock = event.initial_stock

    Exports, State = sale.exports()

The guest module names what the `aggregate-guest` world exports: the class
`Aggregate` for the interface's functions (`Aggregate = Exports`), and the
resource `State` in a module named after the interface (`aggregate.py`:
``from app import State``). Build with componentize-py and ``--stub-wasi``:
the host refuses a guest that imports anything but eshost:aggregate/host.
A reactor is written with `eshost_guest.reactor` instead.

The SDK implements contract 0.3.0 (``wit/v0.3``): an event field annotated
``Subject`` names the person the event is about, and one annotated
``Personal[T]`` holds more of their data. The SDK reads those annotations
and declares the fields in the manifest, so the declaration lives on the
field. The host stores them encrypted under the person's own key; once the
person is forgotten, each reads as ``Forgotten`` in the appliers::

    @dataclass
    class ItemPurchased:
        buyer_id: Subject
        quantity: int

Handlers raise InvalidCommand or PreconditionFailed to refuse a command;
a payload that does not fit its dataclass is refused as InvalidPayload
before the handler is called. Appliers change the state in place, and
raise ValueError for an event that contradicts it (a corrupt stream).
"""

import dataclasses
import json
import types
import typing

from componentize_py_types import Err
from wit_world.imports import host

__all__ = [
    "Aggregate",
    "Forgotten",
    "Personal",
    "Subject",
    "subject_key",
    "InvalidPayload",
    "InvalidCommand",
    "PreconditionFailed",
    "log",
    "Level",
]

Level = host.Level


def log(level: "host.Level", message: str) -> None:
    """Writes a line to the host's log."""
    host.log(level, message)


class InvalidPayload(Exception):
    """The payload is not what the command needs."""


class InvalidCommand(Exception):
    """The command is well formed but makes no sense (a quantity below 1)."""


class PreconditionFailed(Exception):
    """The command cannot apply to this state (the sale does not exist)."""


@dataclasses.dataclass(frozen=True)
class Forgotten:
    """What stands in a forgotten subject's fields: their pseudonym, the
    same in each of their fields and events. It tells forgotten subjects
    apart and says nothing of who they were. In JSON,
    ``{"$forgotten": PSEUDONYM}``."""

    pseudonym: str


_SUBJECT = "eshost:subject"
_PERSONAL = "eshost:personal"

Subject = typing.Annotated[typing.Union[str, Forgotten], _SUBJECT]
"""The field that names the data subject: their id, or once forgotten,
``Forgotten``. One per event."""


class Personal:
    """``Personal[T]``: a field that holds more of the subject's personal
    data: its value, or once they are forgotten, ``Forgotten``."""

    def __class_getitem__(cls, kind):
        return typing.Annotated[typing.Union[kind, Forgotten], _PERSONAL]


def subject_key(value) -> str:
    """What tells a subject apart from others: their id, or once they are
    forgotten, their pseudonym."""
    return value.pseudonym if isinstance(value, Forgotten) else value


def _marker(kind):
    """The personal-data marker of an annotated field type, if any."""
    if typing.get_origin(kind) is typing.Annotated:
        for extra in kind.__metadata__:
            if extra in (_SUBJECT, _PERSONAL):
                return extra
    return None


def declared(cls):
    """The event dataclass's personal data: (its subject field, its other
    personal fields), camelCase as in JSON, or None if it has none."""
    hints = typing.get_type_hints(cls, include_extras=True)
    subjects, fields = [], []
    for field in dataclasses.fields(cls):
        marker = _marker(hints[field.name])
        if marker == _SUBJECT:
            subjects.append(_camel(field.name))
        elif marker == _PERSONAL:
            fields.append(_camel(field.name))
    if len(subjects) > 1:
        raise TypeError(f"{cls.__name__} has more than one Subject field")
    if fields and not subjects:
        raise TypeError(f"{cls.__name__} has Personal fields but no Subject field")
    return (subjects[0], fields) if subjects else None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _check(value, kind, where: str):
    """`value` as the field type `kind` wants, or InvalidPayload."""
    if _marker(kind) is not None:
        # Subject or Personal[T]: the value, or a forgotten one.
        if isinstance(value, dict) and set(value) == {"$forgotten"}:
            return Forgotten(_check(value["$forgotten"], str, where))
        known = [a for a in typing.get_args(typing.get_args(kind)[0]) if a is not Forgotten]
        inner = known[0] if len(known) == 1 else typing.Union[tuple(known)]
        return _check(value, inner, where)
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind) or (typing.Any,)
        if not isinstance(value, list):
            raise InvalidPayload(f"{where} must be a list")
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind):
        # `int | None`: absent or null is None, anything else the other type.
        if value is None:
            return None
        (other,) = [a for a in typing.get_args(kind) if a is not type(None)] or (typing.Any,)
        return _check(value, other, where)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidPayload(f"{where} must be an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InvalidPayload(f"{where} must be a number")
    if kind in (str, bool) and not isinstance(value, kind):
        raise InvalidPayload(f"{where} must be a {kind.__name__}")
    return value


def from_json(cls, data):
    """A dataclass from a JSON object with camelCase keys, checked."""
    if not isinstance(data, dict):
        raise InvalidPayload("the payload must be a JSON object")
    hints = typing.get_type_hints(cls, include_extras=True)
    values = {}
    for field in dataclasses.fields(cls):
        key = _camel(field.name)
        if key in data:
            values[field.name] = _check(data[key], hints[field.name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise InvalidPayload(f"missing field {key}")
    return cls(**values)


def to_json(value) -> str:
    """A dataclass as a JSON object with camelCase keys; anything else
    (a dict, a list, a number) as JSON as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {_camel(f.name): getattr(value, f.name) for f in dataclasses.fields(value)}
    return json.dumps(value, separators=(",", ":"), default=_plain_default)


def _plain_default(value):
    """A forgotten value as JSON holds it, its tombstone."""
    if isinstance(value, Forgotten):
        return {"$forgotten": value.pseudonym}
    raise TypeError(f"{type(value).__name__} is not JSON")


class Aggregate:
    """One aggregate type: its name, version, state class, handlers, appliers."""

    def __init__(self, name: str, version: str, state: type):
        self.name = name
        self.version = version
        self.state = state
        self.commands = {}
        self.events = {}

    def command(self, handler):
        """Registers a handler, `(state, command) -> [events]`, for the
        command dataclass its second parameter is annotated with."""
        cls = list(typing.get_type_hints(handler).values())[1]
        self.commands[cls.__name__] = (cls, handler)
        return handler

    def event(self, applier):
        """Registers an applier, `(state, event) -> None`, for the event
        dataclass its second parameter is annotated with."""
        cls = list(typing.get_type_hints(applier).values())[1]
        self.events[cls.__name__] = (cls, applier)
        return applier

    def exports(self):
        """The `aggregate` interface's class and its `State` resource."""
        # Imported here, not above: only the aggregate-guest world has it,
        # and a reactor's build imports this module for its helpers.
        from wit_world.exports import aggregate as wit

        definition = self

        personal = []
        for name, (cls, _) in definition.events.items():
            found = declared(cls)
            if found is not None:
                personal.append(wit.PersonalEvent(event=name, subject=found[0], fields=found[1]))

        class Exports:
            def describe(self) -> wit.Manifest:
                return wit.Manifest(
                    name=definition.name,
                    version=definition.version,
                    commands=list(definition.commands),
                    events=list(definition.events),
                    old_events=[],
                    personal=personal,
                )

        class State:
            def __init__(self, id: str) -> None:
                self.value = definition.state(id=id)

            @classmethod
            def restore(cls, id: str, snapshot: bytes):
                restored = cls(id)
                try:
                    restored.value = from_json(definition.state, json.loads(snapshot))
                except (ValueError, InvalidPayload) as e:
                    raise Err(f"snapshot is not this aggregate's state: {e}")
                return restored

            def apply(self, events) -> None:
                for recorded in events:
                    # An apply-error names the event refused.
                    def refuse(reason: str):
                        return Err(wit.ApplyError(sequence=recorded.sequence, reason=reason))

                    if recorded.name not in definition.events:
                        raise refuse(f"{definition.name} has no event {recorded.name!r}")
                    cls, applier = definition.events[recorded.name]
                    # The host names the event beside the reason.
                    try:
                        event = from_json(cls, json.loads(recorded.payload))
                    except (ValueError, InvalidPayload) as e:
                        raise refuse(str(e))
                    try:
                        applier(self.value, event)
                    except ValueError as e:
                        raise refuse(str(e))

            def handle(self, command: wit.Command):
                if command.name not in definition.commands:
                    raise Err(
                        wit.CommandError_UnknownCommand(
                            f"{definition.name} has no command {command.name!r}"
                        )
                    )
                cls, handler = definition.commands[command.name]
                try:
                    payload = from_json(cls, json.loads(command.payload))
                    events = handler(self.value, payload)
                except ValueError as e:
                    raise Err(wit.CommandError_InvalidPayload(f"the payload is not JSON: {e}"))
                except InvalidPayload as e:
                    raise Err(wit.CommandError_InvalidPayload(str(e)))
                except InvalidCommand as e:
                    raise Err(wit.CommandError_InvalidCommand(str(e)))
                except PreconditionFailed as e:
                    raise Err(wit.CommandError_PreconditionFailed(str(e)))
                return [wit.Event(name=type(e).__name__, payload=to_json(e)) for e in events]

            def to_json(self) -> str:
                return to_json(self.value)

            def snapshot(self) -> bytes:
                return to_json(self.value).encode()

        return Exports, State
