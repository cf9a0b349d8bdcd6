"""What the API's streams carry: the events, log and watch streams built from the backend's
sources, with the server-side filters of their query parameters.

Called by the API server (controller/api/server.py) when a streaming request arrives, before its
response head is sent: everything that can be refused (an unknown domain, a malformed `since`,
a bad label selector) is refused here as a plain error reply, and a followed events stream is
subscribed before the head goes out, so the client misses nothing that happens once it has the
head. The server only writes what these iterators yield, one JSON line each.

Filters: events by `since` (RFC 3339), `type` (comma-separated event types), `labelSelector`
(the domain's labels, read from its `get` document) and `limit` (the last N recent records:
20 by default, 0 with `follow`, all since `since` when that is given); a watch of every domain by
`labelSelector`. A record of a lost-events marker always passes (the client must see it).

Public surface:
    Stream(items, cleanup), events(backend, args), logs(backend, args, poll), watch(backend, args)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.api import logtail
from controller.api.parsing import Refused
from controller.protocol import Requirement, SelectorError, parse_rfc3339, parse_selector, selects
from controller.state.status import NoSuchDomain

if TYPE_CHECKING:
    from controller.api.server import Backend

Record = dict[str, Any]
EVENTS_DEFAULT = 20  # recent records sent without follow when no limit is given
EVENTS_SCAN = 1_000_000  # recent records looked at when a filter picks among them (all kept)
LOG_LINES = 100  # a log's last lines sent when no `lines` is given


@dataclass
class Stream:
    """The items of one streaming response, and what to release when it ends."""

    items: AsyncIterator[Any]
    cleanup: Callable[[], None] = lambda: None


def selector(args: Mapping[str, Any]) -> tuple[Requirement, ...] | None:
    """The request's parsed labelSelector (None: none given); a bad one is a BadRequest."""
    text = args.get("labelSelector")
    if text is None:
        return None
    try:
        return parse_selector(text)
    except SelectorError as err:
        raise Refused("BadRequest", str(err)) from None


def events(backend: Backend, args: Mapping[str, Any]) -> Stream:
    """Recent records, filtered, then (follow) the live ones under the same filters."""
    accept = _event_filter(backend, args)
    follow = bool(args.get("follow", False))
    filtered = set(args) & {"since", "type", "labelSelector"}
    limit = args.get("limit", None if "since" in args else 0 if follow else EVENTS_DEFAULT)
    name = args.get("name")
    subscription = backend.subscribe(name) if follow else None
    # No await between subscribe and recent_events: nothing is missed or sent twice.
    recent = backend.recent_events(name, EVENTS_SCAN if filtered else limit or 0)
    if limit == 0:
        recent = []

    async def items() -> AsyncIterator[Record]:
        labels: dict[str, dict[str, str]] = {}  # each domain's, read once for the recent ones
        kept = [record for record in recent if await accept(record, labels)]
        for record in kept[-limit:] if limit else kept:
            yield record
        if subscription is not None:
            async for record in subscription:
                if await accept(record, {}):
                    yield record

    return Stream(items(), subscription.close if subscription is not None else lambda: None)


def _event_filter(backend: Backend, args: Mapping[str, Any]
                  ) -> Callable[[Record, dict[str, dict[str, str]]], Awaitable[bool]]:
    """Whether a record passes the request's filters; `labels` caches domains' labels."""
    since = None
    if "since" in args:
        try:
            since = parse_rfc3339(args["since"])
        except ValueError:
            raise Refused("BadRequest", f"since: {args['since']!r} is not an RFC 3339 time "
                          "(such as 2025-11-24T16:00:00Z)") from None
    types = set(args["type"].split(",")) if "type" in args else None
    wanted = selector(args)

    async def accept(record: Record, labels: dict[str, dict[str, str]]) -> bool:
        if record.get("marker"):
            return True
        if types is not None and record.get("event") not in types:
            return False
        if since is not None and _time(record) < since:
            return False
        if wanted is None:
            return True
        domain = record.get("domain")
        if domain is None:
            return False  # a network's event
        if domain not in labels:
            labels[domain] = await _labels(backend, domain)
        return selects(wanted, labels[domain])

    return accept


def _time(record: Record) -> float:
    try:
        return parse_rfc3339(str(record.get("time")))
    except ValueError:
        return 0.0


async def _labels(backend: Backend, name: str) -> dict[str, str]:
    try:
        documents = await backend.get(name)
    except NoSuchDomain:
        return {}
    return next((doc.get("labels") or {} for doc in documents if doc.get("name") == name), {})


def logs(backend: Backend, args: Mapping[str, Any], poll: float) -> Stream:
    """The log's last lines, then (follow) every appended one, as {"line": TEXT}."""
    path = backend.log_path(args["name"])
    lines = args.get("lines", LOG_LINES)
    if args.get("follow"):
        return Stream(_as_items(logtail.follow_lines(path, lines, poll)))
    return Stream(_as_items(_aiter(logtail.last_lines(path, lines))))


def watch(backend: Backend, args: Mapping[str, Any]) -> Stream:
    """A domain's status documents (or every domain's, under a labelSelector) now and at every
    change; {"name", "deleted": true} when one has none. A domain leaving the selector's match
    is sent as deleted."""
    name = args.get("name")
    wanted = selector(args)
    if name is not None:
        return Stream(backend.watch_status(name))
    source = backend.watch_status(None)

    async def items() -> AsyncIterator[Record]:
        sent: set[str] = set()
        async with contextlib.aclosing(source):
            async for document in source:
                subject = str(document.get("name"))
                if document.get("deleted"):
                    if subject in sent:
                        sent.discard(subject)
                        yield document
                elif wanted is None or selects(wanted, document.get("labels") or {}):
                    sent.add(subject)
                    yield document
                elif subject in sent:
                    sent.discard(subject)
                    yield {"name": subject, "deleted": True}

    return Stream(items())


async def _aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _as_items(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    async for line in lines:
        yield {"line": line}
