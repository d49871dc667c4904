#include "gradwatch/common/run_id.h"

#include <gtest/gtest.h>

#include <string>

namespace gradwatch {
namespace {

TEST(RunId, takes_letters_digits_dots_underscores_and_dashes_up_to_the_limit) {
  EXPECT_TRUE(ValidRunId("seed-42_v1.2"));
  EXPECT_TRUE(ValidRunId(std::string(kMaxRunIdLength, 'a')));
  EXPECT_FALSE(ValidRunId(std::string(kMaxRunIdLength + 1, 'a')));
  EXPECT_FALSE(ValidRunId(""));
}

TEST(RunId, refuses_what_would_escape_or_confuse_a_folder_a_label_or_a_terminal) {
  for (const char* bad : {".", "..", "a/b", "a b", "run\n", "r\x1b[2J", "caf\xc3\xa9", "a\\b"}) {
    EXPECT_FALSE(ValidRunId(bad)) << bad;
  }
}

}  // namespace
}  // namespace gradwatch
