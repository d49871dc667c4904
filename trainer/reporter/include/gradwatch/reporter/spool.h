// A local append-only spool of trainer messages, for what the reporter could not keep in
// memory or deliver before the run ended. Each record is
//   [u32 payload length][u32 CRC-32 of the payload][payload: a serialized TrainerMessage]
// (little-endian), after an 8-byte magic "GWSPOOL1". The first record is the run's Hello,
// so `gradwatch replay FILE` can deliver a spool on its own. A torn or corrupt record
// ends the readable part: reading stops there and says how many bytes it skipped.
//
// Not thread-safe: the reporter calls it under its own lock.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gradwatch/v1/telemetry.pb.h"

namespace gradwatch::reporter {

struct SpoolContents {
  std::vector<v1::TrainerMessage> messages;  // in order; the first is the Hello
  uint64_t skipped_bytes = 0;                // a torn or corrupt tail, not read
  std::string error;                         // "" when the file could be read
};

class Spool {
 public:
  // Creates (truncates) the file and writes the magic and the hello. A spool that cannot
  // be created is disabled: error() says why and Append returns false.
  Spool(std::string path, uint64_t max_bytes, const v1::Hello& hello);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // False when the spool is full or unwritable (the caller counts a drop).
  bool Append(const v1::TrainerMessage& message);
  // Every message appended so far (after the hello), for resending; flushes first.
  std::vector<v1::TrainerMessage> Pending();
  // Forgets the appended messages (all acknowledged): back to just the hello.
  void Clear();
  uint64_t records() const { return records_; }
  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

  static SpoolContents Read(const std::string& path);
  static bool IsSpool(const std::string& path);  // starts with the magic

 private:
  void Start();  // magic + hello

  std::string path_;
  uint64_t max_bytes_;
  v1::Hello hello_;
  std::FILE* file_ = nullptr;
  uint64_t bytes_ = 0, records_ = 0;
  std::string error_;
};

// The CRC-32 (IEEE 802.3, as zlib and Python's zlib.crc32 compute it) of each spool record.
uint32_t Crc32(const std::string& bytes);

}  // namespace gradwatch::reporter
