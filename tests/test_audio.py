"""``sipflow audio``: a call's G.711 directions as WAV, lost packets as silence where they were.

The decoder is checked against the encoder both ways (every byte), the WAV against the RTP payloads
tshark reads from the same sample, and the placement on a hand-made stream with a loss and a late
packet."""
import shutil
import struct
import subprocess
import wave

import pytest
from click.testing import CliRunner

from sipflow.cli.app import main
from sipflow.media import g711

from conftest import SAMPLES
from pcaptools import eth_ip, ipv4, udp, write_pcap

BASIC = SAMPLES / "basic-call-rtp.pcap"


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        data = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_decoding_inverts_the_encoder_for_every_byte(codec):
    table = g711.DECODE[codec]
    back = g711.encode(table, codec)
    # μ-law has two zeros (0x7F is -0, encoded back as +0, 0xFF); every other byte comes back as itself
    assert [b for b in range(256) if back[b] != b] == ([0x7F] if codec == "PCMU" else [])
    assert g711.DECODE["PCMU"][0xFF] == 0 and g711.DECODE["PCMU"][0x00] == -32124
    assert g711.DECODE["PCMA"][0xD5] == 8 and g711.DECODE["PCMA"][0x55] == -8


def call_id_of(path):
    out = CliRunner().invoke(main, ["calls", "--format", "csv", str(path)]).output
    return out.splitlines()[1].split(",")[0]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_each_direction_is_its_payloads_decoded_and_the_mix_holds_both(tmp_path):
    result = CliRunner().invoke(main, ["audio", str(BASIC), "--call-id", call_id_of(BASIC), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = subprocess.run(["tshark", "-r", str(BASIC), "-Y", "rtp", "-T", "fields", "-e", "rtp.ssrc",
                          "-e", "rtp.payload"], capture_output=True, text=True, timeout=120).stdout
    payloads = {}
    for line in out.splitlines():
        ssrc, hexdata = line.split("\t")
        payloads[int(ssrc, 16)] = payloads.get(int(ssrc, 16), b"") + bytes.fromhex(hexdata.replace(":", ""))
    wavs = {p.name: read_wav(p) for p in tmp_path.glob("*.wav")}
    assert len(wavs) == 3 and "mixed.wav" in wavs
    for ssrc, data in payloads.items():
        (name,) = [n for n in wavs if f"{ssrc:08X}" in n]
        assert g711.encode(wavs[name], "PCMA") == data          # every sample, in order, nothing lost
    mixed = wavs["mixed.wav"]
    assert len(mixed) >= max(len(w) for n, w in wavs.items() if n != "mixed.wav")
    assert any(mixed) and mixed != wavs[[n for n in wavs if n != "mixed.wav"][0]]


def test_a_lost_packet_is_silence_in_its_place_and_a_late_one_lands_where_it_belongs(tmp_path):
    a, b = "192.0.2.1", "192.0.2.2"
    sdp = f"v=0\r\no=- 1 1 IN IP4 {a}\r\ns=-\r\nc=IN IP4 {a}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    invite = ("INVITE sip:b@y SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n"
              "To: <sip:b@y>\r\nCall-ID: loss@x\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
              f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
    records = [(100, 0, eth_ip(ipv4(a, b, 17, udp(a, b, 5060, 5060, invite))))]
    order = [0, 1, 2, 3, 5, 4, 7, 8, 9]        # 6 never comes; 4 arrives after 5
    for n, i in enumerate(order):
        level = 0x80 + i                        # each packet's bytes say which packet it is
        rtp = struct.pack("!BBHII", 0x80, 0, 500 + i, 8000 + 160 * i, 0xFEED) + bytes([level]) * 160
        records.append((100, 100_000 + n * 20_000, eth_ip(ipv4(a, b, 17, udp(a, b, 4000, 6000, rtp)))))
    path = write_pcap(tmp_path / "loss.pcap", 1, records)
    result = CliRunner().invoke(main, ["audio", str(path), "--call-id", "loss", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "9 packets, 1 silent" in " ".join(result.output.split())
    (wav,) = (tmp_path / "out").glob("*FEED*.wav")
    samples = read_wav(wav)
    assert len(samples) == 10 * 160
    for i in range(10):
        part = samples[160 * i:160 * (i + 1)]
        assert part == ([0] * 160 if i == 6 else [g711.DECODE["PCMU"][0x80 + i]] * 160), i
    assert not (tmp_path / "out" / "mixed.wav").exists()     # one direction: nothing to mix


def test_a_call_id_that_matches_no_call_or_several_is_a_usage_error(tmp_path):
    none = CliRunner().invoke(main, ["audio", str(BASIC), "--call-id", "no-such-call", "-o", str(tmp_path)])
    assert none.exit_code == 2 and "--call-id" in none.output and "no call" in none.output
    reuse = SAMPLES / "port-reuse.pcap"
    many = CliRunner().invoke(main, ["audio", str(reuse), "--call-id", "@", "-o", str(tmp_path)])
    assert many.exit_code == 2 and "3 calls match" in many.output


def test_other_codecs_are_listed_not_written(tmp_path):
    av = SAMPLES / "call-av-dtmf.pcap"
    result = CliRunner().invoke(main, ["audio", str(av), "--call-id", call_id_of(av), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("(VP8): not G.711") == 2 and len(list(tmp_path.glob("*.wav"))) == 3
