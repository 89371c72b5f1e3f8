#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/) from the test cases:
tests/corpus/messages.txt, the rsyslog-verified cases of shared/src/syslog/verified_cases.rs
and the framing table of shared/src/input/framing/tests.rs. Deterministic: running it again
rewrites the same files, and leaves the others (inputs that once found a bug) alone. Usage: python3 fuzz/seeds.py (from anywhere)."""
import hashlib
import random
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def corpus_messages():
    out = []
    for line in (ROOT / "tests/corpus/messages.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        raw, i, b = line.encode(), 0, bytearray()
        while i < len(raw):
            if raw[i] == 0x5C and i + 1 < len(raw):
                c = chr(raw[i + 1])
                if c == "x":
                    b.append(int(raw[i + 2:i + 4], 16)); i += 4; continue
                b.extend({"t": b"\t", "r": b"\r", "0": b"\0", "\\": b"\\"}.get(c, raw[i:i + 2])); i += 2
                continue
            b.append(raw[i]); i += 1
        out.append(bytes(b))
    return out


def rust_byte_strings(path):
    """Every b"..." literal of a Rust file, decoded."""
    text = (ROOT / path).read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r'b"((?:[^"\\]|\\.)*)"', text):
        s, i, b = m.group(1), 0, bytearray()
        while i < len(s):
            if s[i] == "\\":
                c = s[i + 1]
                if c == "x":
                    b.append(int(s[i + 2:i + 4], 16)); i += 4; continue
                b.extend({"n": b"\n", "t": b"\t", "r": b"\r", "0": b"\0", "\\": b"\\", '"': b'"', "'": b"'"}[c]); i += 2
                continue
            b.extend(s[i].encode()); i += 1
        out.append(bytes(b))
    return out


def framing_table():
    text = (ROOT / "shared/src/input/framing/tests.rs").read_text(encoding="utf-8")
    return [bytes(m.group(1), "utf-8").decode("unicode_escape").encode("latin-1")
            for m in re.finditer(r'\(\s*"((?:[^"\\]|\\.)*)",\s*&\[', text)]


def write(target, items):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)  # inputs added by hand (past crashes) stay
    for data in items:
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main():
    rng = random.Random(6587)
    msgs = sorted(set(corpus_messages() + rust_byte_strings("shared/src/syslog/verified_cases.rs")))
    msgs = [m for m in msgs if len(m) <= 4096]
    write("sanitise", msgs)
    write("parsers", msgs)
    # render: first byte chooses "repeat past MAX_MESSAGE" when it is a multiple of 32.
    write("render", [b"\x01" + m for m in msgs] + [b"\x00" + m for m in msgs[::25]])
    # framing: 8 bytes of cut sizes, then a stream mixing octet-counted and LF frames.
    streams = framing_table()
    for k in range(0, len(msgs), 6):
        group = msgs[k:k + 6]
        stream = b"".join(b"%d %s" % (len(m), m) if j % 2 else m.replace(b"\n", b" ") + b"\n"
                          for j, m in enumerate(group))
        streams.append(stream)
    write("framing", [bytes(rng.randrange(256) for _ in range(8)) + s for s in streams])
    # journal_reader and ring_consumer read small programs (see their doc comments): a few
    # random ones of each size give the fuzzer valid starting points.
    write("journal_reader", [bytes(rng.randrange(256) for _ in range(n)) for n in (2, 16, 64, 200, 400, 800) for _ in range(6)])
    rings = [bytes(rng.randrange(256) for _ in range(n)) for n in (8, 32, 128, 300, 600) for _ in range(6)]
    # A whole well-formed ring file (mode byte 0: raw file), empty and with one record.
    hdr = bytearray(4096); hdr[0:8] = b"SKFRING\0"; hdr[8:12] = struct.pack("<I", 1)
    hdr[12:16] = struct.pack("<I", 4096); hdr[16:24] = struct.pack("<Q", 256)
    rings.append(b"\x00" + bytes(hdr) + bytes(256))
    write("ring_consumer", rings)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"seed corpus: {sum(1 for f in CORPUS.rglob('*') if f.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
