// Whole-file reads and atomic replacement, for the small files gradwatch reads and writes
// (configs, tokens, certificates, job records, the ports file, traces, spools).
#pragma once

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace gradwatch {

// The whole file into `out`; false when it cannot be opened or read (errno says why).
inline bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return false;
  *out = s.str();
  return true;
}

// The whole file; throws std::runtime_error "`what` PATH: cannot read: REASON" (`what`
// names the file's role, e.g. "tokens file"; "" for none).
inline std::string ReadFileOrThrow(const std::string& path, const std::string& what = "") {
  std::string text;
  if (!ReadWholeFile(path, &text)) {
    throw std::runtime_error((what.empty() ? "" : what + " ") + path + ": cannot read: " + std::strerror(errno));
  }
  return text;
}

// Writes `text` to PATH.tmp, sets `perms`, and renames it over `path`: a reader sees the
// old file or the new one, never half of it. Throws std::runtime_error naming the file.
inline void WriteFileAtomically(const std::filesystem::path& path, const std::string& text,
                                std::filesystem::perms perms = std::filesystem::perms::owner_read |
                                                               std::filesystem::perms::owner_write |
                                                               std::filesystem::perms::group_read |
                                                               std::filesystem::perms::others_read) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(tmp.string() + ": cannot write");
  }
  std::error_code ec;
  std::filesystem::permissions(tmp, perms, ec);
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error(path.string() + ": cannot replace: " + ec.message());
}

}  // namespace gradwatch
