// "Did you mean": the edit distance and when a name is offered.
#include "gradwatch/common/suggest.h"

#include <gtest/gtest.h>

namespace gradwatch {
namespace {

TEST(Suggest, counts_a_swap_of_neighbours_as_one_edit) {
  EXPECT_EQ(EditDistance("rnus", "runs"), 1u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("same", "same"), 0u);
}

TEST(Suggest, offers_a_name_only_when_it_is_close) {
  std::vector<std::string> known{"runs", "run", "export", "replay"};
  EXPECT_EQ(ClosestName("exprot", known), "export");
  EXPECT_EQ(ClosestName("rn", known), "run");
  EXPECT_EQ(ClosestName("zzzz", known), "");
  EXPECT_EQ(DidYouMean("zzzz", known), "");
}

}  // namespace
}  // namespace gradwatch
