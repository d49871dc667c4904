// Synthetic data, the x6 augmentation and the .npy dataset loader with each of its refusals.
// One of the two torch test files (each costs ~30 s to compile).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "train/data.h"
#include "train/npy.h"

namespace gradwatch::train {
namespace {

namespace fs = std::filesystem;

SyntheticOptions small(uint64_t seed, double fraction = 0.25) {
  SyntheticOptions o;
  o.seed = seed;
  o.images = 16;
  o.size = 16;
  o.foreground_fraction = fraction;
  return o;
}

TEST(SyntheticData, has_the_documented_shapes_and_split) {
  const auto [train, val] = make_synthetic(SyntheticOptions{});
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{36, 6, 32, 32}));
  EXPECT_EQ(train.masks.sizes(), (std::vector<int64_t>{36, 1, 32, 32}));
  EXPECT_EQ(val.size(), 12);
  EXPECT_EQ(train.images.scalar_type(), torch::kFloat);
  EXPECT_TRUE(((train.masks == 0) | (train.masks == 1)).all().item<bool>());
}

TEST(SyntheticData, same_seed_gives_the_same_data_whatever_the_global_seed) {
  torch::manual_seed(1);
  const auto a = make_synthetic(small(7));
  torch::manual_seed(2);
  const auto b = make_synthetic(small(7));
  EXPECT_TRUE(torch::equal(a.first.images, b.first.images));
  EXPECT_TRUE(torch::equal(a.second.masks, b.second.masks));
}

TEST(SyntheticData, different_seeds_give_different_data) {
  const auto a = make_synthetic(small(7));
  const auto b = make_synthetic(small(8));
  EXPECT_FALSE(torch::equal(a.first.masks, b.first.masks));
  EXPECT_FALSE(torch::equal(a.first.images, b.first.images));
}

TEST(SyntheticData, foreground_fraction_is_near_the_target) {
  for (double target : {0.1, 0.25, 0.4}) {
    SyntheticOptions o;  // 48 images of 32x32
    o.foreground_fraction = target;
    const auto [train, val] = make_synthetic(o);
    const double fraction = torch::cat({train.masks, val.masks}).mean().item<double>();
    EXPECT_NEAR(fraction, target, 0.05) << "target " << target;
  }
  const auto [empty, unused] = make_synthetic(small(7, 0.0));
  EXPECT_EQ(empty.masks.sum().item<double>(), 0.0);
}

TEST(SyntheticData, foreground_changes_the_informative_channels) {
  SyntheticOptions o = small(3);
  o.noise = 0.0;
  const Dataset d = make_synthetic(o).first;
  const torch::Tensor fg = d.masks.squeeze(1) > 0.5;
  const auto contrast = [&](int64_t c) {
    const torch::Tensor x = d.images.select(1, c);
    return x.masked_select(fg).mean().item<double>() - x.masked_select(~fg).mean().item<double>();
  };
  EXPECT_NEAR(contrast(0), 2.0, 0.2);   // brighter inside
  EXPECT_NEAR(contrast(1), -1.2, 0.2);  // darker inside
}

TEST(SyntheticData, rejects_options_out_of_range) {
  SyntheticOptions o;
  o.foreground_fraction = 1.0;
  EXPECT_THROW(make_synthetic(o), std::invalid_argument);
}

// One 2x2 item: image [[1,2],[3,4]] (2 channels, the second = 10x the first), mask = (image == 4).
Dataset tiny_item() {
  const torch::Tensor c0 = torch::tensor({1.f, 2.f, 3.f, 4.f}).view({1, 1, 2, 2});
  return Dataset{torch::cat({c0, 10 * c0}, 1), (c0 == 4).to(torch::kFloat)};
}

TEST(AugmentX6, gives_six_rotations_and_flips_in_documented_order) {
  const Dataset out = augment_x6(tiny_item());
  ASSERT_EQ(out.size(), 6);
  const std::vector<std::vector<float>> expected = {
      {1, 2, 3, 4},  // original
      {2, 4, 1, 3},  // rot90 (counter-clockwise)
      {4, 3, 2, 1},  // rot180
      {3, 1, 4, 2},  // rot270
      {2, 1, 4, 3},  // flip left-right
      {3, 4, 1, 2},  // flip upside-down
  };
  for (int64_t k = 0; k < 6; ++k) {
    const torch::Tensor image = out.images[k][0].flatten().contiguous();
    EXPECT_EQ(std::vector<float>(image.data_ptr<float>(), image.data_ptr<float>() + 4), expected[k])
        << "transform " << k;
  }
}

TEST(AugmentX6, applies_the_same_transform_to_every_channel_and_the_mask) {
  Dataset d = tiny_item();
  d = Dataset{torch::cat({d.images, d.images + 100}), torch::cat({d.masks, d.masks})};  // N = 2
  const Dataset out = augment_x6(d);
  ASSERT_EQ(out.size(), 12);
  EXPECT_TRUE(torch::equal(out.images.select(1, 1), 10 * out.images.select(1, 0) -
                                                         torch::tensor({0.f, 900.f}).repeat(6).view({12, 1, 1})));
  const torch::Tensor where_4 = (out.images.select(1, 0) == 4) | (out.images.select(1, 0) == 104);
  EXPECT_TRUE(torch::equal(out.masks.squeeze(1), where_4.to(torch::kFloat)));
}

TEST(AugmentX6, refuses_non_square_images) {
  const Dataset d{torch::zeros({1, 1, 2, 4}), torch::zeros({1, 1, 2, 4})};
  EXPECT_THROW(augment_x6(d), std::invalid_argument);
}

TEST(SelectItems, returns_the_items_in_the_given_order) {
  const Dataset d{torch::arange(4, torch::kFloat).view({4, 1, 1, 1}), torch::zeros({4, 1, 1, 1})};
  const Dataset batch = select_items(d, {3, 0, 3});
  EXPECT_TRUE(torch::equal(batch.images.flatten(), torch::tensor({3.f, 0.f, 3.f})));
}

// ---- load_dataset_dir

// A fresh directory with images/ and masks/, removed afterwards.
class DatasetDir : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("gradwatch_data_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "images");
    fs::create_directories(root_ / "masks");
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string path(const std::string& rel) const { return (root_ / rel).string(); }

  void write_float(const std::string& rel, std::vector<int64_t> shape, float value) const {
    NpyArray a;
    a.shape = std::move(shape);
    a.data.resize(static_cast<size_t>(a.numel() * 4));
    for (int64_t i = 0; i < a.numel(); ++i) std::memcpy(a.data.data() + 4 * i, &value, 4);
    save_npy(path(rel), a);
  }
  void write_bytes(const std::string& rel, NpyDtype dtype, std::vector<int64_t> shape,
                   uint8_t value) const {
    NpyArray a;
    a.dtype = dtype;
    a.shape = std::move(shape);
    a.data.assign(static_cast<size_t>(a.numel()), value);
    save_npy(path(rel), a);
  }
  // images/<name>.npy float [6, 4, 4] of `value` and masks/<name>.npy uint8 [4, 4] of ones.
  void write_pair(const std::string& name, float value = 0.5f) const {
    write_float("images/" + name + ".npy", {6, 4, 4}, value);
    write_bytes("masks/" + name + ".npy", NpyDtype::kUint8, {4, 4}, 1);
  }
  std::string load_error() const {
    try {
      load_dataset_dir(root_.string());
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(no error)";
  }

  fs::path root_;
};

TEST_F(DatasetDir, loads_images_and_masks_in_name_order) {
  write_pair("b", 0.25f);
  write_pair("a", 0.75f);
  write_bytes("images/c.npy", NpyDtype::kUint8, {6, 4, 4}, 51);  // uint8: 51 / 255 = .2
  write_bytes("masks/c.npy", NpyDtype::kBool, {1, 4, 4}, 0);     // [1, H, W] bool
  const Dataset d = load_dataset_dir(root_.string());
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{3, 6, 4, 4}));
  EXPECT_EQ(d.masks.sizes(), (std::vector<int64_t>{3, 1, 4, 4}));
  EXPECT_FLOAT_EQ(d.images[0][5][3][3].item<float>(), 0.75f);
  EXPECT_FLOAT_EQ(d.images[1][0][0][0].item<float>(), 0.25f);
  EXPECT_NEAR(d.images[2][0][0][0].item<float>(), 0.2f, 1e-6);
  EXPECT_EQ(d.masks.sum().item<float>(), 32.0f);
}

TEST_F(DatasetDir, refuses_a_folder_without_images) {
  fs::remove_all(root_ / "images");
  EXPECT_NE(load_error().find(root_.string() + ": no images/ folder"), std::string::npos) << load_error();
}

TEST_F(DatasetDir, refuses_an_empty_images_folder) {
  EXPECT_EQ(load_error(), path("images") + ": no .npy files");
}

TEST_F(DatasetDir, names_the_image_whose_mask_is_missing) {
  write_pair("a");
  write_float("images/b.npy", {6, 4, 4}, 0.f);
  EXPECT_EQ(load_error(), "missing mask for \"" + path("images/b.npy") + "\" (expected \"" +
                              path("masks/b.npy") + "\")");
}

TEST_F(DatasetDir, names_the_image_with_a_different_channel_count) {
  write_pair("a");
  write_float("images/b.npy", {5, 4, 4}, 0.f);
  write_bytes("masks/b.npy", NpyDtype::kUint8, {4, 4}, 0);
  EXPECT_EQ(load_error(), path("images/b.npy") + " has 5 channels, expected 6 (from " +
                              path("images/a.npy") + ")");
}

TEST_F(DatasetDir, names_the_image_with_a_different_size) {
  write_pair("a");
  write_float("images/b.npy", {6, 4, 8}, 0.f);
  write_bytes("masks/b.npy", NpyDtype::kUint8, {4, 8}, 0);
  EXPECT_EQ(load_error(), path("images/b.npy") + " is 4x8 (HxW), expected 4x4 (from " +
                              path("images/a.npy") + ")");
}

TEST_F(DatasetDir, refuses_an_image_of_the_wrong_rank_or_dtype) {
  write_float("images/a.npy", {4, 4}, 0.f);
  write_bytes("masks/a.npy", NpyDtype::kUint8, {4, 4}, 0);
  EXPECT_EQ(load_error(), path("images/a.npy") + ": image has shape [4, 4], expected [C, H, W]");
  write_bytes("images/a.npy", NpyDtype::kBool, {6, 4, 4}, 0);
  EXPECT_EQ(load_error(),
            path("images/a.npy") + ": image dtype '|b1' is not supported (expected '<f4' or '|u1')");
}

TEST_F(DatasetDir, refuses_non_finite_image_values) {
  write_pair("a", std::nanf(""));
  EXPECT_EQ(load_error(), path("images/a.npy") + ": image has non-finite values");
}

TEST_F(DatasetDir, refuses_non_binary_mask_values) {
  write_pair("a");
  write_bytes("masks/a.npy", NpyDtype::kUint8, {4, 4}, 255);
  EXPECT_EQ(load_error(), path("masks/a.npy") + ": mask values must be 0 or 1, found 255 at flat index 0");
  write_float("masks/a.npy", {4, 4}, 0.5f);
  EXPECT_EQ(load_error(), path("masks/a.npy") + ": mask values must be 0 or 1, found 0.5 at flat index 0");
}

TEST_F(DatasetDir, refuses_a_mask_of_another_size) {
  write_pair("a");
  write_bytes("masks/a.npy", NpyDtype::kUint8, {4, 5}, 0);
  EXPECT_EQ(load_error(), path("masks/a.npy") + ": mask has shape [4, 5], expected [4, 4] like " +
                              path("images/a.npy"));
}

TEST_F(DatasetDir, passes_on_the_npy_readers_error) {
  write_pair("a");
  std::ofstream(path("images/a.npy"), std::ios::binary) << "not numpy";
  EXPECT_EQ(load_error(), path("images/a.npy") + ": not a .npy file (bad magic)");
}

}  // namespace
}  // namespace gradwatch::train
