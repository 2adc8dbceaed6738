# conntrack.events: the text of a conntrack or NAT event ("conntrack new ...",
# "nat dnat A -> B"), made only when someone reads it. Events are produced for
# every packet, but their text is needed only when the walk is traced (kdp
# trace, kdp run --detail): str() formats it then.
from __future__ import annotations


class Event:
    """A format string and its arguments; str() is the event's text."""

    __slots__ = ("fmt", "args")

    def __init__(self, fmt: str, *args) -> None:
        self.fmt, self.args = fmt, args

    def __str__(self) -> str:
        return self.fmt.format(*self.args)

    def __contains__(self, text: str) -> bool:
        return text in str(self)

    def __eq__(self, other) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return repr(str(self))
