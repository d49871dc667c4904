// Whole-file reads and durable atomic replacement (common/file.h).
#include "gradwatch/common/file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace gradwatch {
namespace {

namespace fs = std::filesystem;

class File : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gw-file-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Read(const fs::path& p) { return ReadFileOrThrow(p.string()); }
  size_t Entries() { return static_cast<size_t>(std::distance(fs::directory_iterator(dir_), {})); }

  fs::path dir_;
};

// Limits the size of files this process writes, for one test: a write past it fails with
// EFBIG, as a full disk fails with ENOSPC.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit limit = old_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  sighandler_t old_handler_;
};

TEST_F(File, replaces_the_whole_file_and_leaves_no_temporary_behind) {
  WriteFileAtomically(dir_ / "job.json", "a much longer first version\n");
  WriteFileAtomically(dir_ / "job.json", "v2\n");
  EXPECT_EQ(Read(dir_ / "job.json"), "v2\n");
  EXPECT_EQ(Entries(), 1u);
}

TEST_F(File, gives_the_file_the_requested_permissions) {
  WriteFileAtomically(dir_ / "secret", "token", fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(fs::status(dir_ / "secret").permissions(), fs::perms::owner_read | fs::perms::owner_write);
  WriteFileAtomically(dir_ / "public", "x");
  EXPECT_EQ(fs::status(dir_ / "public").permissions(), kReadableByAll);
}

TEST_F(File, a_failed_write_names_the_path_and_reason_and_keeps_the_old_file) {
  WriteFileAtomically(dir_ / "job.json", "old\n");
  try {
    FileSizeLimit limit(16);
    WriteFileAtomically(dir_ / "job.json", std::string(1000, 'x'));
    FAIL() << "a write past the file size limit succeeded";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("cannot write " + (dir_ / "job.json").string() + ": write "), std::string::npos) << what;
    EXPECT_NE(what.find("File too large"), std::string::npos) << what;
  }
  EXPECT_EQ(Read(dir_ / "job.json"), "old\n");
  EXPECT_EQ(Entries(), 1u);  // the temporary file is gone
}

TEST_F(File, a_missing_folder_is_reported_with_the_path_and_reason) {
  try {
    WriteFileAtomically(dir_ / "gone" / "ports.json", "{}");
    FAIL() << "wrote into a missing folder";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find((dir_ / "gone" / "ports.json").string()), std::string::npos) << what;
    EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;
  }
}

TEST_F(File, never_follows_a_link_planted_at_the_old_temporary_name) {
  std::ofstream(dir_ / "victim") << "keep me";
  fs::create_symlink(dir_ / "victim", dir_ / "job.json.tmp");
  WriteFileAtomically(dir_ / "job.json", "record");
  EXPECT_EQ(Read(dir_ / "victim"), "keep me");
  EXPECT_EQ(Read(dir_ / "job.json"), "record");
}

TEST_F(File, reading_a_folder_or_a_missing_file_fails_with_the_reason) {
  std::string text = "untouched";
  EXPECT_FALSE(ReadWholeFile(dir_.string(), &text));
  EXPECT_EQ(errno, EISDIR);
  EXPECT_EQ(text, "untouched");
  try {
    ReadFileOrThrow((dir_ / "none").string(), "tokens file");
    FAIL() << "read a missing file";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "tokens file " + (dir_ / "none").string() + ": cannot read: No such file or directory");
  }
}

TEST_F(File, reads_a_file_larger_than_one_buffer_whole) {
  std::string big(200'000, 'g');
  big.back() = '\n';
  WriteFileAtomically(dir_ / "trace.csv", big);
  EXPECT_EQ(Read(dir_ / "trace.csv"), big);
}

}  // namespace
}  // namespace gradwatch
