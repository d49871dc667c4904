#include "gradwatch/common/run_id.h"

#include "gradwatch/common/name_value.h"

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

TEST(ScalarName, takes_paths_and_colons_a_run_id_would_refuse) {
  EXPECT_TRUE(ValidScalarName("train/grad:ratio-1.5_x"));
  EXPECT_FALSE(ValidRunId("train/grad:ratio"));
  EXPECT_TRUE(ValidScalarName(std::string(kMaxScalarNameLength, 'a')));
  for (const std::string bad : {std::string(kMaxScalarNameLength + 1, 'a'), std::string(), std::string("data time"),
                                std::string("a\nb"), std::string("x{y}")}) {
    EXPECT_FALSE(ValidScalarName(bad)) << bad;
  }
}

TEST(NameValue, splits_at_the_first_equals_and_reads_the_whole_rest_as_a_number) {
  std::string name = "untouched";
  double value = -1;
  ASSERT_TRUE(ParseNameValue("spike_z_critical=6.5", &name, &value));
  EXPECT_EQ(name, "spike_z_critical");
  EXPECT_EQ(value, 6.5);
  EXPECT_FALSE(ParseNameValue("scalar_min.a=b=1e-3", &name, &value));
  for (const char* bad : {"spike_z_critical", "=6", "x=", "x=6s", "x= "}) {
    EXPECT_FALSE(ParseNameValue(bad, &name, &value)) << bad;
  }
  EXPECT_EQ(name, "spike_z_critical");
}

}  // namespace
}  // namespace gradwatch
