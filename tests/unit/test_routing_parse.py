"""The readers of vtysh's and birdc's answers, against what real daemons printed.

tests/data/routing/<daemon>-<version>/ holds answers recorded from FRR 8.4.4 and BIRD
2.0.12 (Debian 12) and FRR 10.3 and BIRD 2.17.6 (Debian 13) by scripts/record_routing.py,
each with what it means in index.json (see the README there).
Hypothesis checks that any input gives a result or RoutingParseError, nothing else.
"""

import contextlib
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgpool_anycast_hook.routing_parse import (
    BirdReply,
    Network,
    RoutingParseError,
    bird_exported,
    bird_protocols,
    bird_replies,
    frr_bgp_advertised,
    frr_ospf6_external,
    frr_ospf_external,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "routing"
A4 = ipaddress.ip_network("198.18.2.0/32")
A6 = ipaddress.ip_network("2001:db8:250::1/128")


def _recordings() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for index in sorted(DATA.glob("*/index.json")):
        for name, meaning in json.loads(index.read_text()).items():
            if not name.startswith("_"):
                found.append((index.parent / name, name, meaning))
    return found


RECORDINGS = _recordings()


def test_recordings_exist() -> None:
    sources = {path.parent.name.split("-")[0] for path, _, _ in RECORDINGS}
    assert sources == {"frr", "bird"}, sources
    assert any(p.parent.name == "frr-8.4.4" for p, _, _ in RECORDINGS)
    assert any(p.parent.name == "frr-10.3" for p, _, _ in RECORDINGS)
    assert any(p.parent.name.startswith("bird-2.0") for p, _, _ in RECORDINGS)
    assert any(p.parent.name.startswith("bird-2.17") for p, _, _ in RECORDINGS)


@pytest.mark.parametrize(
    "path,name,meaning", RECORDINGS, ids=[f"{p.parent.name}/{n}" for p, n, _ in RECORDINGS]
)
def test_recorded_answer(path: Path, name: str, meaning: dict[str, Any]) -> None:
    text = path.read_text()
    if name.startswith("ospf6-"):
        assert frr_ospf6_external(text) == {ipaddress.ip_network(p) for p in meaning["announced"]}
    elif name.startswith("ospf-"):
        assert frr_ospf_external(text) == {ipaddress.ip_network(p) for p in meaning["announced"]}
    elif name.startswith("bgp"):
        prefix = ipaddress.ip_network(meaning["prefix"])
        assert frr_bgp_advertised(text, prefix) == tuple(meaning["advertised_to"])
    elif name.startswith("error-"):
        with pytest.raises(RoutingParseError):
            frr_ospf_external(text)
    elif name.startswith("show-protocols"):
        states = {p.name: p.state for p in bird_protocols(text)}
        for protocol, state in meaning["protocols"].items():
            assert states[protocol] == state
    elif name.startswith("route-") and meaning.get("error"):
        with pytest.raises(RoutingParseError):
            bird_exported(text, A4)
    elif name.startswith("route-"):
        prefix = ipaddress.ip_network(meaning["prefix"])
        assert bird_exported(text, prefix) is meaning["exported"]
    else:
        pytest.fail(f"no reader for recording {name}")


def _lsa84(ident: str, mask: int, age: int) -> dict[str, Any]:
    return {"lsaAge": age, "lsaType": "AS-external-LSA", "linkStateId": ident, "networkMask": mask}


def test_ospf_both_shapes_and_maxage() -> None:
    fresh, flushed = _lsa84("198.18.2.0", 32, 12), _lsa84("198.18.2.1", 32, 3600)
    v84 = {"routerId": "10.0.0.1", "AS External Link States": {"198.18.2.0": fresh, "x": flushed}}
    v10 = {"routerId": "10.0.0.1", "asExternalLinkStates": [fresh, flushed, {}]}
    for document in (v84, v10):
        assert frr_ospf_external(json.dumps(document)) == {A4}
    assert frr_ospf_external("{}") == set()
    assert frr_ospf_external('{"routerId": "10.0.0.1"}') == set()


def test_no_instance_is_nothing_originated() -> None:
    assert frr_ospf_external("% OSPF is not enabled on vrf default\n") == set()  # 8.4
    assert frr_ospf_external("% OSPF instance not found\n") == set()  # 10.x without json
    assert frr_ospf6_external("") == set()  # 8.4 and 10.x: no output at all
    assert frr_bgp_advertised('{"warning":"Default BGP instance not found"}', A4) == ()


def test_ospf_link_state_id_with_host_bits() -> None:
    # RFC 2328 appendix E: a /24 beside a /32 of the same network gets ID x.x.x.255.
    lsa = _lsa84("198.18.2.255", 24, 1)
    text = json.dumps({"asExternalLinkStates": [lsa]})
    assert frr_ospf_external(text) == {ipaddress.ip_network("198.18.2.0/24")}


@pytest.mark.parametrize(
    "text",
    [
        "% Unknown command: show ip ospf database external self-originate json",
        "",
        "[]",
        '{"asExternalLinkStates": 3}',
        '{"asExternalLinkStates": [{"lsaAge": "1", "linkStateId": "1.2.3.4", "networkMask": 32}]}',
        '{"asExternalLinkStates": [{"lsaAge": 1, "linkStateId": "1.2.3", "networkMask": 32}]}',
        '{"vrf": {"default": {}}}',
        "[" * 100000,
    ],
)
def test_ospf_refuses(text: str) -> None:
    with pytest.raises(RoutingParseError):
        frr_ospf_external(text)


def _path(**fields: Any) -> dict[str, Any]:
    return {"bestpath": {"overall": True}, "sourced": True, **fields}


def test_bgp_only_our_best_path_counts() -> None:
    def answer(path: dict[str, Any], adv: dict[str, Any] | None) -> str:
        document: dict[str, Any] = {"prefix": "198.18.2.0/32", "paths": [path]}
        if adv is not None:
            document["advertisedTo"] = adv
        return json.dumps(document)

    peer = {"10.250.0.2": {"hostname": "b"}}
    assert frr_bgp_advertised(answer(_path(), peer), A4) == ("10.250.0.2",)
    assert frr_bgp_advertised(answer(_path(), None), A4) == ()
    learnt = {"bestpath": {"overall": True}, "peer": {"peerId": "10.250.0.2"}}
    assert frr_bgp_advertised(answer(learnt, peer), A4) == ()
    assert frr_bgp_advertised(answer({"sourced": True}, peer), A4) == ()  # not best
    addpath = _path(advertisedTo=peer)
    assert frr_bgp_advertised(answer(addpath, None), A4) == ("10.250.0.2",)
    assert frr_bgp_advertised("{}", A4) == ()
    with pytest.raises(RoutingParseError):
        frr_bgp_advertised(answer(_path(), peer), ipaddress.ip_network("198.18.2.1/32"))


def test_ospf6_shape() -> None:
    lsa = {"type": "ASE", "lsId": "0.0.0.1", "advRouter": "10.0.0.1", "age": 5}
    document = {"asScopedLinkStateDb": [{"lsa": [{**lsa, "payload": "2001:db8:250::1/128"}]}]}
    assert frr_ospf6_external(json.dumps(document)) == {A6}
    lsa["age"] = 3600
    document = {"asScopedLinkStateDb": [{"lsa": [{**lsa, "payload": "2001:db8:250::1/128"}]}]}
    assert frr_ospf6_external(json.dumps(document)) == set()


def test_bird_replies_and_errors() -> None:
    text = "0001 BIRD 2.0.12 ready.\n1007-Table master4:\n1007-198.18.2.0/32  unicast [x] *\n"
    text += "     \tdev lo\n"
    assert bird_replies(text)[:2] == [
        BirdReply(1, "BIRD 2.0.12 ready."),
        BirdReply(1007, "Table master4:"),
    ]
    assert bird_exported(text, A4) is True
    assert bird_exported(text, ipaddress.ip_network("198.18.2.1/32")) is False
    assert bird_exported("0001 BIRD 2.0.12 ready.\n8001 Network not found\n", A4) is False
    with pytest.raises(RoutingParseError):
        bird_exported("0001 BIRD ready.\n9001 syntax error, unexpected CF_SYM_UNDEFINED\n", A4)
    with pytest.raises(RoutingParseError):
        bird_exported("Unable to connect to server control socket\n", A4)


# Any input: a result or RoutingParseError, never another exception.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["asExternalLinkStates", "AS External Link States", "routerId", "lsaAge",
             "linkStateId", "networkMask", "route", "asScopedLinkStateDb", "lsa", "type",
             "age", "payload", "prefix", "paths", "bestpath", "overall", "sourced",
             "advertisedTo", "peer", "peerId", "warning"]
        )
        | st.text(max_size=8),
        children,
        max_size=5,
    ),
    max_leaves=30,
)  # fmt: skip
networks = st.sampled_from([A4, A6, ipaddress.ip_network("10.0.0.0/24")])


def _total(reader: Any, *args: Any) -> None:
    with contextlib.suppress(RoutingParseError):
        reader(*args)


@given(json_values, networks)
def test_frr_readers_are_total_on_json(value: Any, network: Network) -> None:
    text = json.dumps(value)
    _total(frr_ospf_external, text)
    _total(frr_ospf6_external, text)
    _total(frr_bgp_advertised, text, network)


@given(st.text(max_size=300), networks)
def test_every_reader_is_total_on_text(text: str, network: Network) -> None:
    _total(frr_ospf_external, text)
    _total(frr_ospf6_external, text)
    _total(frr_bgp_advertised, text, network)
    _total(bird_protocols, text)
    _total(bird_exported, text, network)


bird_lines = st.lists(
    st.tuples(
        st.sampled_from(
            ["0001 ", "1007-", "1002-", "2002-", "8001 ", "9001 ", "0000 ", "     ", ""]
        ),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
    ).map("".join),
    max_size=8,
).map("\n".join)


@given(bird_lines, networks)
def test_bird_readers_are_total_on_reply_lines(text: str, network: Network) -> None:
    _total(bird_protocols, text)
    _total(bird_exported, text, network)
