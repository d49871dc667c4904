"""The spool's bytes are the C++ reporter's (trainer/reporter/src/spool.cc)."""
import os
import struct
import tempfile
import unittest
import zlib

import fakes  # noqa: F401  (the package on sys.path)
from gradwatch import spool
from gradwatch.v1 import telemetry_pb2 as pb


class SpoolTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "run.spool")
        self.hello = pb.Hello(run_id="r", layer_names=["a", "b"], trainer_instance=42)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def step(self, n: int) -> pb.TrainerMessage:
        return pb.TrainerMessage(step=pb.StepReport(step=n, loss=0.5, layer_grad_norms=[1.0, 2.0]))

    def test_crc_is_ieee_802_3(self):
        self.assertEqual(zlib.crc32(b"123456789"), 0xCBF43926)  # the CRC-32 check value

    def test_file_is_magic_then_length_crc_payload_records_little_endian(self):
        s = spool.Spool(self.path, 1 << 20, self.hello)
        self.assertTrue(s.append(self.step(1)))
        s.close()
        data = open(self.path, "rb").read()
        hello = pb.TrainerMessage(hello=self.hello).SerializeToString()
        step = self.step(1).SerializeToString()
        expected = (b"GWSPOOL1" + struct.pack("<II", len(hello), zlib.crc32(hello)) + hello
                    + struct.pack("<II", len(step), zlib.crc32(step)) + step)
        self.assertEqual(data, expected)
        self.assertEqual(data[8:12], len(hello).to_bytes(4, "little"))

    def test_read_returns_the_hello_first_then_the_messages(self):
        s = spool.Spool(self.path, 1 << 20, self.hello)
        for n in (1, 2, 3):
            s.append(self.step(n))
        self.assertEqual([m.step.step for m in s.pending()], [1, 2, 3])
        s.close()
        c = spool.read(self.path)
        self.assertEqual((c.error, c.skipped_bytes), ("", 0))
        self.assertEqual(c.messages[0].hello.trainer_instance, 42)
        self.assertTrue(spool.is_spool(self.path))

    def test_a_torn_or_corrupt_tail_ends_the_readable_part(self):
        s = spool.Spool(self.path, 1 << 20, self.hello)
        s.append(self.step(1))
        s.append(self.step(2))
        s.close()
        whole = open(self.path, "rb").read()
        open(self.path, "wb").write(whole[:-3])  # torn
        c = spool.read(self.path)
        self.assertEqual([m.WhichOneof("kind") for m in c.messages], ["hello", "step"])
        self.assertEqual(c.skipped_bytes, len(self.step(2).SerializeToString()) + 8 - 3)
        corrupt = bytearray(whole)
        corrupt[-1] ^= 0xFF
        open(self.path, "wb").write(bytes(corrupt))
        self.assertEqual(len(spool.read(self.path).messages), 2)

    def test_full_spool_refuses_and_clear_keeps_only_the_hello(self):
        s = spool.Spool(self.path, 120, self.hello)
        appended = [s.append(self.step(n)) for n in range(1, 10)]
        self.assertIn(False, appended)
        s.clear()
        self.assertEqual(s.records, 0)
        s.close()
        self.assertEqual(len(spool.read(self.path).messages), 1)

    def test_not_a_spool_and_an_unwritable_one_say_why(self):
        open(self.path, "wb").write(b"step,loss\n")
        self.assertIn("not a gradwatch spool", spool.read(self.path).error)
        self.assertFalse(spool.is_spool(self.path))
        s = spool.Spool(os.path.join(self.tmp.name, "missing", "x.spool"), 1 << 20, self.hello)
        self.assertIn("cannot write the spool", s.error)
        self.assertFalse(s.append(self.step(1)))


if __name__ == "__main__":
    unittest.main()
