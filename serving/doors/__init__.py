"""Doors: other APIs' wire formats translated to and from the gateway's chat shape.

Each module holds one protocol: the request into a Chat Completions request, the
finished answer back, and a :class:`~serving.gateway.Wire` that writes the gateway's
checked chat stream as that protocol's events. A refused field raises
:class:`~bandit.errors.RequestError` whose message starts with the field's path.
"""

from serving.doors.messages import AnthropicWire
from serving.doors.responses import ResponsesWire

__all__ = ["AnthropicWire", "ResponsesWire"]
