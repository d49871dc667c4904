#include "gradwatch/common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace gradwatch {
namespace {

// Closes a file descriptor it owns, once.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports close's own result (a write-back error may surface here).
  int Close() {
    int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_;
};

bool WriteAll(int fd, const std::string& text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

// Makes the rename in `dir` durable. A file system that cannot fsync folders says EINVAL.
bool SyncFolder(const std::filesystem::path& dir) {
  Fd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return false;
  if (::fsync(fd.get()) != 0 && errno != EINVAL) return false;
  return fd.Close() == 0;
}

[[noreturn]] void Fail(const std::filesystem::path& path, const std::string& step, int err) {
  throw std::runtime_error("cannot write " + path.string() + ": " + step + ": " + std::strerror(err));
}

}  // namespace

bool ReadWholeFile(const std::string& path, std::string* out) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return false;
  std::string text;
  std::vector<char> buffer(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;  // EISDIR for a folder
    if (n == 0) break;
    text.append(buffer.data(), static_cast<size_t>(n));
  }
  *out = std::move(text);
  return true;
}

std::string ReadFileOrThrow(const std::string& path, const std::string& what) {
  std::string text;
  if (!ReadWholeFile(path, &text)) {
    throw std::runtime_error((what.empty() ? "" : what + " ") + path + ": cannot read: " + std::strerror(errno));
  }
  return text;
}

void WriteFileAtomically(const std::filesystem::path& path, const std::string& text, std::filesystem::perms perms) {
  std::string tmp = path.string() + ".tmp.XXXXXX";
  Fd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (fd.get() < 0) Fail(path, "create " + tmp, errno);
  auto fail = [&](const std::string& step) {
    int err = errno;
    ::unlink(tmp.c_str());
    Fail(path, step + " " + tmp, err);
  };
  if (::fchmod(fd.get(), static_cast<mode_t>(perms)) != 0) fail("chmod");
  if (!WriteAll(fd.get(), text)) fail("write");
  if (::fsync(fd.get()) != 0) fail("fsync");
  if (fd.Close() != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  if (!SyncFolder(path.parent_path())) Fail(path, "fsync folder " + path.parent_path().string(), errno);
}

}  // namespace gradwatch
