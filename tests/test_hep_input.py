"""HEP input without a network (the live collector is tested with Kamailio in test_live_capture.py): a HEP
packet handed to the analyzer as a listener would hand it is decoded like HEP in a capture, and timed by
the agent's own capture time; the listen address is checked before anything starts."""
import pytest
from click.testing import CliRunner

from sipflow.analysis.analyzer import Analyzer
from sipflow.capture.files import open_captures
from sipflow.capture.hep import parse_spec
from sipflow.cli import main
from sipflow.errors import CaptureError
from sipflow.net.link import HEP_PAYLOAD

from pcaptools import hep2, hep3, sip_text, write_pcap

A, B = "198.51.100.10", "203.0.113.20"     # documentation addresses: data inside the packets only
AGENT_TIME = 1_700_000_000
ARRIVAL = AGENT_TIME + 0.750               # the packet reached the collector 750 ms after the agent saw it


def options(call_id="hep-1@x"):
    return sip_text(f"OPTIONS sip:{B} SIP/2.0", [("Via", f"SIP/2.0/UDP {A}:5060;branch=z9hG4bKh1"),
                                                  ("From", "<sip:a@x>;tag=1"), ("To", f"<sip:{B}>"),
                                                  ("Call-ID", call_id), ("CSeq", "1 OPTIONS")])


@pytest.mark.parametrize("make", [hep3, hep2], ids=["hep3", "hep2"])
def test_a_received_hep_packet_is_timed_by_the_agent(make):
    an = Analyzer()
    an.feed(ARRIVAL, 1, 1, HEP_PAYLOAD, make(A, B, 5060, 5060, AGENT_TIME, 250_000, options()))
    a = an.result()
    (m,) = a.messages
    assert (m.method, m.src, m.sport, m.dst, m.dport, m.transport) == ("OPTIONS", A, 5060, B, 5060, "hep")
    assert m.ts == pytest.approx(AGENT_TIME + 0.25, abs=1e-6)


def test_a_packet_that_is_not_hep_is_counted_not_read():
    an = Analyzer()
    an.feed(ARRIVAL, 1, 1, HEP_PAYLOAD, b"HEP9 not a hep packet")
    a = an.result()
    assert a.messages == () and a.stats["sip_messages"] == 0


def test_a_file_cannot_claim_the_hep_link_type(tmp_path):
    path = write_pcap(tmp_path / "x.pcap", HEP_PAYLOAD, [(AGENT_TIME, 0, hep3(A, B, 5060, 5060, 1, 0, options()))])
    with pytest.raises(CaptureError, match="link type 65000 is not supported"):
        open_captures([str(path)])


@pytest.mark.parametrize("spec,ok", [("udp:127.0.0.1:9060", ("udp", "127.0.0.1", 9060)),
                                     ("tcp:[::1]:9061", ("tcp", "::1", 9061)),
                                     ("udp:127.0.0.1", None), ("sctp:127.0.0.1:9060", None),
                                     ("udp:127.0.0.1:99999", None), ("udp::9060", None)])
def test_listen_addresses(spec, ok):
    if ok:
        assert parse_spec(spec) == ok
    else:
        with pytest.raises(ValueError):
            parse_spec(spec)


def test_live_usage_errors_name_the_option():
    r = CliRunner().invoke(main, ["live", "--hep-listen", "udp:127.0.0.1"])
    assert r.exit_code == 2 and "--hep-listen" in r.output and "udp:HOST:PORT" in r.output
    r = CliRunner().invoke(main, ["live", "--hep-listen", "udp:127.0.0.1:9060", "-w", "x.pcap"])
    assert r.exit_code == 2 and "give -i IFACE too" in r.output
