"""What FRR's vtysh and BIRD's birdc answer about the anycast prefixes, read without I/O.

`status --routing` asks the routing daemon whether it exports each address (routing.py
runs the commands). The answers' shapes differ between versions: FRR 8.4 keys its
self-originated AS-external LSAs by link-state ID under "AS External Link States", FRR
10 lists them under "asExternalLinkStates"; BIRD's text changes in its details. So the
reading is kept here, pure, and every reader either returns a result or raises
RoutingParseError, whatever it is given (tests/unit/test_routing_parse.py checks that
with hypothesis and with answers recorded from real daemons, tests/data/routing/).
"""

import ipaddress
import json
from typing import Any, NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# An LSA of this age is being flushed: ospfd keeps it in its database, at MaxAge,
# until every neighbour has acknowledged it. It announces nothing.
OSPF_MAX_AGE = 3600

MAX_TEXT = 1 << 20  # routing.py never reads more than this from one command


class RoutingParseError(ValueError):
    """The answer is not what this version of the reader understands; the message says why."""


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return repr(line[:80])


def _document(text: str) -> dict[str, Any]:
    """vtysh's JSON answer as an object; its "% ..." complaints become the error message."""
    if len(text) > MAX_TEXT:
        raise RoutingParseError("answer too long")
    stripped = text.strip()
    if stripped.startswith("%"):
        raise RoutingParseError(f"FRR says {_short(stripped)}")
    try:
        document = json.loads(stripped)
    except RecursionError:
        raise RoutingParseError("JSON nested too deeply") from None
    except ValueError:  # json.JSONDecodeError, and a lone surrogate
        raise RoutingParseError(f"not JSON: {_short(stripped)}") from None
    if not isinstance(document, dict):
        raise RoutingParseError("JSON answer is not an object")
    return document


def _entries(value: Any, what: str) -> list[dict[str, Any]]:
    """An LSA list: a JSON array (FRR 10) or an object keyed by link-state ID (FRR 8.4)."""
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        raise RoutingParseError(f"{what} is neither a list nor an object")
    # FRR adds an empty object for an LSA it then skips (not self-originated, or a type
    # it does not describe): not an error, just nothing.
    return [item for item in items if isinstance(item, dict) and item]


def _age(entry: dict[str, Any], key: str) -> int:
    age = entry.get(key)
    if isinstance(age, bool) or not isinstance(age, int) or age < 0:
        raise RoutingParseError(f"LSA without a valid {key}")
    return age


# What ospfd says, in text even when asked for JSON, without `router ospf`: it
# originates nothing (8.4: "not enabled on vrf default"; 10.x answers `{}`).
_NO_OSPF = ("% OSPF is not enabled", "% OSPF instance not found")


def frr_ospf_external(text: str) -> set[ipaddress.IPv4Network]:
    """`show ip ospf database external self-originate json`: the prefixes ospfd originates.

    An LSA at MaxAge is a withdrawal still being flooded, so it does not count.
    ospfd without `router ospf` originates nothing.
    """
    if text.strip().startswith(_NO_OSPF):
        return set()
    document = _document(text)
    if not document:
        return set()
    lsas = document.get("asExternalLinkStates", document.get("AS External Link States"))
    if lsas is None:
        if "routerId" in document:
            return set()  # an OSPF instance with no external LSA of its own
        raise RoutingParseError("no AS-external LSA list in the answer")
    prefixes: set[ipaddress.IPv4Network] = set()
    for entry in _entries(lsas, "the AS-external LSA list"):
        if _age(entry, "lsaAge") >= OSPF_MAX_AGE:
            continue
        prefixes.add(_ospf_prefix(entry))
    return prefixes


def _ospf_prefix(entry: dict[str, Any]) -> ipaddress.IPv4Network:
    ident, mask = entry.get("linkStateId"), entry.get("networkMask")
    try:
        if isinstance(ident, str) and isinstance(mask, int) and not isinstance(mask, bool):
            # The link-state ID may carry host bits (RFC 2328, appendix E): mask them.
            return ipaddress.IPv4Network(f"{ident}/{mask}", strict=False)
        route = entry.get("route")  # the summary form of the same LSA
        if isinstance(route, str):
            return ipaddress.IPv4Network(route, strict=False)
    except ValueError:
        pass
    raise RoutingParseError("AS-external LSA without a valid prefix")


def frr_ospf6_external(text: str) -> set[ipaddress.IPv6Network]:
    """`show ipv6 ospf6 database as-external self-originated json`: what ospf6d originates.

    ospf6d without `router ospf6` answers nothing at all (8.4): it originates nothing.
    """
    if not text.strip():
        return set()
    document = _document(text)
    if not document:
        return set()
    areas = document.get("areaScopedLinkStateDb")
    lsdb = document.get("asScopedLinkStateDb")
    if lsdb is None:
        if areas is not None or "interfaceScopedLinkStateDb" in document:
            return set()
        raise RoutingParseError("no AS-scoped LSA database in the answer")
    if not isinstance(lsdb, list):
        raise RoutingParseError("asScopedLinkStateDb is not a list")
    prefixes: set[ipaddress.IPv6Network] = set()
    for scope in lsdb:
        if not isinstance(scope, dict):
            raise RoutingParseError("an AS-scoped LSA database entry is not an object")
        for entry in _entries(scope.get("lsa", []), "the AS-scoped LSA list"):
            if entry.get("type") not in ("ASE", None):
                continue
            if _age(entry, "age") >= OSPF_MAX_AGE:
                continue
            payload = entry.get("payload")
            try:
                if not isinstance(payload, str):
                    raise ValueError
                prefixes.add(ipaddress.IPv6Network(payload, strict=False))
            except ValueError:
                raise RoutingParseError("AS-external LSA without a valid prefix") from None
    return prefixes


def frr_bgp_advertised(text: str, prefix: Network) -> tuple[str, ...]:
    """`show bgp ipv4|ipv6 unicast PREFIX json`: the peers our own path to PREFIX went to.

    Only a path that this bgpd originated (redistribute connected, network) counts, and
    only while it is the best path: a path learnt from a peer is someone else's
    announcement. The peers are bgpd's adj-out ("advertisedTo"), which holds only
    established peers to which the export policy let the route go. bgpd answers `{}`
    for a prefix it does not have, and without `router bgp` too.
    """
    document = _document(text)
    if not document or "warning" in document:  # "Network not in table" on some versions
        return ()
    shown = document.get("prefix")
    if shown is not None:
        try:
            same = isinstance(shown, str) and ipaddress.ip_network(shown) == prefix
        except ValueError:
            same = False
        if not same:
            raise RoutingParseError(f"answer is about {str(shown)[:50]!r}, not {prefix}")
    paths = document.get("paths")
    if paths is None:
        raise RoutingParseError("no paths in the answer")
    if not isinstance(paths, list):
        raise RoutingParseError("paths is not a list")
    peers: set[str] = set()
    for path in paths:
        if not isinstance(path, dict):
            raise RoutingParseError("a path is not an object")
        if not _is_best(path) or not _is_own(path):
            continue
        # Without addpath the list is the prefix's; with addpath, each path has its own.
        for holder in (path, document):
            advertised = holder.get("advertisedTo")
            if advertised is None:
                continue
            if not isinstance(advertised, dict):
                raise RoutingParseError("advertisedTo is not an object")
            peers.update(str(peer) for peer in advertised)
    return tuple(sorted(peers))


def _is_best(path: dict[str, Any]) -> bool:
    best = path.get("bestpath")
    if isinstance(best, dict):
        return best.get("overall") is True
    return best is True


def _is_own(path: dict[str, Any]) -> bool:
    if path.get("sourced") is True or path.get("local") is True:
        return True
    peer = path.get("peer")
    return isinstance(peer, dict) and peer.get("peerId") in ("0.0.0.0", "::")


class BirdReply(NamedTuple):
    code: int  # BIRD's reply code: 0xxx done, 1xxx table rows, 2xxx headers, 8xxx/9xxx errors
    text: str


def bird_replies(text: str) -> list[BirdReply]:
    """`birdc -v` output: every line "NNNN-text", "NNNN text", or a continuation "     text"."""
    if len(text) > MAX_TEXT:
        raise RoutingParseError("answer too long")
    replies: list[BirdReply] = []
    code: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        head = line[:4]
        if head.isascii() and head.isdigit() and line[4:5] in ("-", " ", ""):
            code = int(head)
            replies.append(BirdReply(code, line[5:]))
        elif line.startswith(" ") and code is not None:
            replies.append(BirdReply(code, line[5:] if line.startswith("     ") else line[1:]))
        elif line.startswith(">>> "):
            continue  # an asynchronous message (a log line), not part of the answer
        else:
            raise RoutingParseError(f"not a BIRD reply line: {_short(line)}")
    return replies


def bird_error(replies: list[BirdReply]) -> BirdReply | None:
    """The first error reply (8xxx runtime, 9xxx parse), if any."""
    return next((reply for reply in replies if reply.code >= 8000), None)


class BirdProtocol(NamedTuple):
    name: str
    proto: str  # BIRD's protocol type as `show protocols` names it: OSPF, BGP, Direct, ...
    table: str
    state: str  # up, down, start, stop
    info: str


def bird_protocols(text: str) -> list[BirdProtocol]:
    """`show protocols`: one 1002 row per protocol instance."""
    replies = bird_replies(text)
    error = bird_error(replies)
    if error is not None:
        raise RoutingParseError(f"BIRD says {error.code} {_short(error.text)}")
    protocols: list[BirdProtocol] = []
    for reply in replies:
        if reply.code != 1002:
            continue
        fields = reply.text.split()
        if len(fields) < 4:
            raise RoutingParseError(f"short protocol row: {_short(reply.text)}")
        # Name Proto Table State Since Info; Since is one or two words (date and time).
        info = " ".join(fields[5:]) if len(fields) > 5 else ""
        protocols.append(BirdProtocol(fields[0], fields[1], fields[2], fields[3], info))
    if not any(reply.code == 2002 for reply in replies) and not protocols:
        raise RoutingParseError("no protocol table in the answer")
    return protocols


# BIRD's errors that mean "this protocol cannot carry this prefix", not a failure:
# an IPv6 prefix asked of an IPv4-only OSPF, for one.
_NOT_APPLICABLE = ("No valid tables", "No export channel", "Incompatible type")


def bird_exported(text: str, prefix: Network) -> bool:
    """`show route PREFIX exported PROTOCOL`: did BIRD export PREFIX to that protocol?

    `exported` reads the protocol's export map (what was really sent), not the current
    filter; a channel that is down exports nothing. "Network not found" (8001) is a
    clean no, so is a protocol of the other address family.
    """
    replies = bird_replies(text)
    error = bird_error(replies)
    if error is not None:
        if error.code == 8001 or any(phrase in error.text for phrase in _NOT_APPLICABLE):
            return False
        raise RoutingParseError(f"BIRD says {error.code} {_short(error.text)}")
    for reply in replies:
        if reply.code != 1007 or not reply.text[:1].strip():
            continue  # continuation rows (next hop, attributes) start with blanks
        first = reply.text.split()[0]
        if first.startswith("Table") or first.endswith(":"):
            continue
        try:
            shown = ipaddress.ip_network(first)
        except ValueError:
            continue  # a row of another shape; only a prefix row decides
        if shown == prefix:
            return True
    return False
