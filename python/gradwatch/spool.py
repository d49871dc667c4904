"""The trainer's local append-only spool, byte for byte the C++ reporter's
(trainer/reporter/include/gradwatch/reporter/spool.h), so `gradwatch replay FILE` delivers a
spool written by either:

    b"GWSPOOL1"                                  8-byte magic
    then records: [u32 payload length][u32 CRC-32 of the payload][payload]   (little-endian)

Each payload is a serialized gradwatch.v1.TrainerMessage; the first is the run's Hello. A torn or
corrupt record ends the readable part: reading stops there and says how many bytes it skipped.
The CRC is IEEE 802.3 (zlib.crc32). Not thread-safe: the reporter calls it under its own lock.
"""
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import List, Optional

from gradwatch.v1 import telemetry_pb2 as pb

MAGIC = b"GWSPOOL1"
_HEADER = struct.Struct("<II")


def frame(message: "pb.TrainerMessage") -> bytes:
    """One record: length, CRC-32 and the serialized message."""
    payload = message.SerializeToString()
    return _HEADER.pack(len(payload), zlib.crc32(payload) & 0xFFFFFFFF) + payload


@dataclass
class SpoolContents:
    messages: List["pb.TrainerMessage"] = field(default_factory=list)  # in order; the first is the Hello
    skipped_bytes: int = 0  # a torn or corrupt tail, not read
    error: str = ""         # "" when the file could be read


class Spool:
    """Creates (truncates) `path` and writes the magic and the hello. A spool that cannot be
    created is disabled: `error` says why and append() returns False."""

    def __init__(self, path: str, max_bytes: int, hello: "pb.Hello") -> None:
        self.path, self.max_bytes, self.error = path, max_bytes, ""
        self._hello = hello
        self._file: Optional[object] = None
        self._bytes = 0
        self.records = 0  # messages appended since the last clear()
        self._start()

    def _start(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            self._file = open(self.path, "wb")
        except OSError as e:
            self.error = f"cannot write the spool {self.path}: {e.strerror}"
            return
        head = MAGIC + frame(pb.TrainerMessage(hello=self._hello))
        self._file.write(head)
        self._bytes, self.records = len(head), 0

    def append(self, message: "pb.TrainerMessage") -> bool:
        """False when the spool is full or unwritable (the caller counts a drop)."""
        if self._file is None:
            return False
        record = frame(message)
        if self._bytes + len(record) > self.max_bytes:
            return False
        try:
            self._file.write(record)
        except OSError as e:
            self.error = f"spool {self.path}: write failed: {e.strerror}"
            return False
        self._bytes += len(record)
        self.records += 1
        return True

    def pending(self) -> List["pb.TrainerMessage"]:
        """Every message appended so far (after the hello), for resending; flushes first."""
        if self._file is None or self.records == 0:
            return []
        self._file.flush()
        return read(self.path).messages[1:]

    def clear(self) -> None:
        """Forgets the appended messages (all acknowledged): back to just the hello."""
        if self.records > 0:
            self._start()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def is_spool(path: str) -> bool:
    """Whether the file starts with the magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read(path: str) -> SpoolContents:
    """Every whole record of a spool, stopping at the first torn or corrupt one."""
    out = SpoolContents()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        out.error = f"cannot read the spool {path}: {e.strerror}"
        return out
    if not data.startswith(MAGIC):
        out.error = f"{path} is not a gradwatch spool (no GWSPOOL1 header)"
        return out
    at = len(MAGIC)
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        payload = data[at + _HEADER.size:at + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) & 0xFFFFFFFF != crc:
            break  # torn (the run stopped mid-write) or corrupt from here on
        message = pb.TrainerMessage()
        try:
            message.ParseFromString(payload)
        except Exception:  # google.protobuf.message.DecodeError
            break
        out.messages.append(message)
        at += _HEADER.size + length
    out.skipped_bytes = len(data) - at
    if not out.messages or not out.messages[0].HasField("hello"):
        out.error = f"{path}: the spool does not start with the run's hello"
    return out


def remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
