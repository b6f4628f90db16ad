"""G.711 μ-law and A-law (ITU-T G.711) both ways, and the probe's test tone.

Owns turning 16-bit linear PCM samples into G.711 bytes and back, the way the reference C code (Sun's
g711.c) does, and the 1 kHz tone ``probe call`` sends. No I/O, no clock. At 8000 samples/s a 1 kHz tone is 8
samples a period, so one 20 ms packet (160 samples) holds 20 whole periods and every packet's payload
is the same bytes.
"""
from __future__ import annotations

import math
from typing import Iterable, List

SAMPLE_RATE = 8000
PACKET_MS = 20
SAMPLES_PER_PACKET = SAMPLE_RATE * PACKET_MS // 1000     # 160 samples = 160 bytes of G.711

_ULAW_BIAS = 0x21
_ULAW_CLIP = 8159
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def ulaw_byte(sample: int) -> int:
    """One 16-bit signed sample as a μ-law byte: 14-bit magnitude plus bias 0x21, clipped at 8159,
    bits inverted (Sun's g711.c ``linear2ulaw``)."""
    pcm = max(-32768, min(32767, int(sample))) >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, _ULAW_CLIP) + _ULAW_BIAS
    seg = max(0, pcm.bit_length() - 6)           # 0..7 for 0x21..0x1FFF, 8 at the clip
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def alaw_byte(sample: int) -> int:
    """One 16-bit signed sample as an A-law byte (13-bit magnitude, even bits inverted: XOR 0x55)."""
    pcm = max(-32768, min(32767, int(sample))) >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask, pcm = 0x55, -pcm - 1
    seg = next((i for i, end in enumerate(_ALAW_SEG_END) if pcm <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0x0F if seg < 2 else (pcm >> seg) & 0x0F
    return aval ^ mask


def ulaw_sample(byte: int) -> int:
    """A μ-law byte as a 16-bit sample (Sun's g711.c ``ulaw2linear``): invert, then the segment's
    step size times the mantissa plus half a step, less the bias."""
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def alaw_sample(byte: int) -> int:
    """An A-law byte as a 16-bit sample (``alaw2linear``): XOR 0x55, then mantissa and segment."""
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


DECODE = {"PCMU": tuple(ulaw_sample(b) for b in range(256)), "PCMA": tuple(alaw_sample(b) for b in range(256))}


def encode(samples: Iterable[int], codec: str) -> bytes:
    """Samples as ``PCMU`` (μ-law) or ``PCMA`` (A-law) bytes."""
    f = {"PCMU": ulaw_byte, "PCMA": alaw_byte}[codec.upper()]
    return bytes(f(s) for s in samples)


def tone(frequency: float = 1000.0, count: int = SAMPLES_PER_PACKET, level_dbfs: float = -10.0,
         start: int = 0) -> List[int]:
    """``count`` samples of a sine at ``frequency`` Hz, ``level_dbfs`` below full scale, from sample ``start``."""
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    return [round(amplitude * math.sin(2 * math.pi * frequency * (start + n) / SAMPLE_RATE)) for n in range(count)]


def tone_packet(codec: str, frequency: float = 1000.0) -> bytes:
    """One 20 ms payload of the test tone (the same for every packet at 1 kHz)."""
    return encode(tone(frequency), codec)


def read_wav(path: str) -> List[int]:
    """The samples of a WAV file that is 8000 Hz, mono, 16-bit linear PCM (what G.711 carries without
    resampling); anything else is a ``ValueError`` saying what the file is instead."""
    import wave
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            problems = []
            if rate != SAMPLE_RATE:
                problems.append(f"{rate} Hz")
            if channels != 1:
                problems.append(f"{channels} channels")
            if width != 2:
                problems.append(f"{width * 8}-bit")
            if problems:
                raise ValueError(f"{path}: {', '.join(problems)}; --audio needs 8000 Hz mono 16-bit PCM WAV "
                                 f"(e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav)")
            data = w.readframes(frames)
    except wave.Error as e:
        raise ValueError(f"{path}: not a PCM WAV file ({e}); --audio needs 8000 Hz mono 16-bit PCM WAV") from None
    except EOFError:
        raise ValueError(f"{path}: truncated WAV file") from None
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    n = len(data) // 2
    if n == 0:
        raise ValueError(f"{path}: the WAV file has no samples")
    import struct
    return list(struct.unpack(f"<{n}h", data[:2 * n]))


def audio_payload(encoded: bytes, packet: int) -> bytes:
    """Payload number ``packet`` (20 ms each) of ``encoded`` G.711 bytes played in a loop."""
    n = len(encoded)
    start = (packet * SAMPLES_PER_PACKET) % n
    out = encoded[start:start + SAMPLES_PER_PACKET]
    while len(out) < SAMPLES_PER_PACKET:
        out += encoded[:SAMPLES_PER_PACKET - len(out)]
    return out
