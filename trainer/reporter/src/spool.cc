#include "gradwatch/reporter/spool.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "gradwatch/common/file.h"

namespace gradwatch::reporter {
namespace {

constexpr char kMagic[8] = {'G', 'W', 'S', 'P', 'O', 'O', 'L', '1'};

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetU32(const std::string& in, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

std::string Frame(const v1::TrainerMessage& m) {
  std::string payload = m.SerializeAsString(), out;
  PutU32(out, static_cast<uint32_t>(payload.size()));
  PutU32(out, Crc32(payload));
  return out + payload;
}

}  // namespace

uint32_t Crc32(const std::string& bytes) {  // zlib's: the IEEE 802.3 CRC-32 the format names
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* data = reinterpret_cast<const Bytef*>(bytes.data());
  for (size_t at = 0; at < bytes.size();) {  // zlib takes a uInt length
    const uInt n = static_cast<uInt>(std::min<size_t>(bytes.size() - at, 1u << 30));
    crc = ::crc32(crc, data + at, n);
    at += n;
  }
  return static_cast<uint32_t>(crc);
}

Spool::Spool(std::string path, uint64_t max_bytes, const v1::Hello& hello)
    : path_(std::move(path)), max_bytes_(max_bytes), hello_(hello) {
  Start();
}

Spool::~Spool() {
  if (file_) std::fclose(file_);
}

void Spool::Start() {
  if (file_) std::fclose(file_);
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) {
    error_ = "cannot write the spool " + path_ + ": " + std::strerror(errno);
    return;
  }
  v1::TrainerMessage hello;
  *hello.mutable_hello() = hello_;
  std::string head(kMagic, sizeof kMagic);
  head += Frame(hello);
  std::fwrite(head.data(), 1, head.size(), file_);
  bytes_ = head.size();
  records_ = 0;
}

bool Spool::Append(const v1::TrainerMessage& message) {
  if (!file_) return false;
  std::string frame = Frame(message);
  if (bytes_ + frame.size() > max_bytes_) return false;
  if (std::fwrite(frame.data(), 1, frame.size(), file_) != frame.size()) {
    error_ = "spool " + path_ + ": write failed: " + std::strerror(errno);
    return false;
  }
  bytes_ += frame.size();
  ++records_;
  return true;
}

std::vector<v1::TrainerMessage> Spool::Pending() {
  if (!file_ || records_ == 0) return {};
  std::fflush(file_);
  SpoolContents c = Read(path_);
  if (!c.messages.empty()) c.messages.erase(c.messages.begin());  // the hello
  return std::move(c.messages);
}

void Spool::Clear() {
  if (records_ > 0) Start();
}

bool Spool::IsSpool(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[sizeof kMagic] = {};
  in.read(head, sizeof head);
  return in.gcount() == sizeof head && std::memcmp(head, kMagic, sizeof kMagic) == 0;
}

SpoolContents Spool::Read(const std::string& path) {
  SpoolContents out;
  std::string data;
  if (!ReadWholeFile(path, &data)) {
    out.error = "cannot read the spool " + path + ": " + std::strerror(errno);
    return out;
  }
  if (data.size() < sizeof kMagic || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) {
    out.error = path + " is not a gradwatch spool (no GWSPOOL1 header)";
    return out;
  }
  size_t at = sizeof kMagic;
  while (at + 8 <= data.size()) {
    uint32_t length = GetU32(data, at), crc = GetU32(data, at + 4);
    if (at + 8 + length > data.size()) break;  // torn: the run stopped mid-write
    std::string payload = data.substr(at + 8, length);
    v1::TrainerMessage m;
    if (Crc32(payload) != crc || !m.ParseFromString(payload)) break;  // corrupt from here on
    out.messages.push_back(std::move(m));
    at += 8 + length;
  }
  out.skipped_bytes = data.size() - at;
  if (out.messages.empty() || !out.messages.front().has_hello()) {
    out.error = path + ": the spool does not start with the run's hello";
  }
  return out;
}

}  // namespace gradwatch::reporter
