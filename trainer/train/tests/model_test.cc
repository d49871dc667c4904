// The Jaccard loss and metrics against hand-computed values, and the U-Net's shape, names and
// determinism. One of the two torch test files (each costs ~30 s to compile).
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "train/jaccard.h"
#include "train/unet.h"

namespace gradwatch::train {
namespace {

// A [N, C, 2, 2] tensor from N*C*4 values.
torch::Tensor t(std::vector<float> values, int64_t n = 1, int64_t c = 1) {
  return torch::tensor(values).view({n, c, 2, 2});
}

TEST(JaccardLoss, matches_a_hand_computed_2x2_example) {
  // y_true [[1,0],[1,0]], y_pred [[.5,.5],[1,0]]:
  // intersection = .5 + 1 = 1.5; sum = 1.5 + .5 + 2 + 0 = 4; jac = 1.5 / (4 - 1.5) = .6; loss = .4
  const torch::Tensor loss = jaccard_coef_loss(t({1, 0, 1, 0}), t({.5, .5, 1, 0}));
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), 0.4, 1e-6);
}

TEST(JaccardLoss, averages_the_channels) {
  // Channel 0 as above (jac .6); channel 1 predicted exactly (jac 1): loss = 1 - (.6 + 1) / 2 = .2
  const torch::Tensor y_true = t({1, 0, 1, 0, 1, 1, 0, 0}, 1, 2);
  const torch::Tensor y_pred = t({.5, .5, 1, 0, 1, 1, 0, 0}, 1, 2);
  EXPECT_NEAR(jaccard_coef_loss(y_true, y_pred).item<double>(), 0.2, 1e-6);
  const torch::Tensor jac = jaccard_coef(y_true, y_pred);
  EXPECT_NEAR(jac[0].item<double>(), 0.6, 1e-6);
  EXPECT_NEAR(jac[1].item<double>(), 1.0, 1e-6);
}

TEST(JaccardLoss, sums_over_the_batch_before_dividing) {
  // Item 0: y_true [[1,0],[0,0]] predicted exactly; item 1: y_true all ones, predicted all zeros.
  // Batch sums: intersection 1, sum 2 + 4 = 6, jac = 1 / (6 - 1) = .2, loss .8
  // (a mean of per-item losses would give (0 + 1) / 2 = .5).
  const torch::Tensor y_true = t({1, 0, 0, 0, 1, 1, 1, 1}, 2);
  const torch::Tensor y_pred = t({1, 0, 0, 0, 0, 0, 0, 0}, 2);
  EXPECT_NEAR(jaccard_coef_loss(y_true, y_pred).item<double>(), 0.8, 1e-6);
}

TEST(JaccardLoss, all_zero_prediction_pins_loss_at_one) {
  // jac = 1e-12 / (2 + 1e-12): the collapse of the case, the loss within float rounding of 1.
  const torch::Tensor loss = jaccard_coef_loss(t({1, 0, 1, 0}), torch::zeros({1, 1, 2, 2}));
  EXPECT_NEAR(loss.item<double>(), 1.0, 1e-9);
}

TEST(JaccardLoss, perfect_and_empty_predictions_give_zero) {
  EXPECT_NEAR(jaccard_coef_loss(t({1, 0, 1, 0}), t({1, 0, 1, 0})).item<double>(), 0.0, 1e-7);
  // Empty mask, empty prediction: smooth / smooth = 1, so no loss.
  EXPECT_NEAR(jaccard_coef_loss(torch::zeros({1, 1, 2, 2}), torch::zeros({1, 1, 2, 2})).item<double>(),
              0.0, 1e-7);
}

TEST(JaccardLoss, gradient_matches_the_hand_derivative) {
  // jac = I / (S - I) with dI/dp = t, dS/dp = 1: djac/dp = (t (S - I) - I (1 - t)) / (S - I)^2.
  // Example above: S - I = 2.5, I = 1.5: where t = 1, .4; where t = 0, -.24; dloss = -djac.
  const torch::Tensor y_pred = t({.5, .5, 1, 0}).requires_grad_();
  jaccard_coef_loss(t({1, 0, 1, 0}), y_pred).backward();
  const torch::Tensor expected = t({-0.4f, 0.24f, -0.4f, 0.24f});
  EXPECT_TRUE(torch::allclose(y_pred.grad(), expected, 1e-5, 1e-6)) << y_pred.grad();
}

TEST(JaccardLoss, rejects_mismatched_shapes) {
  EXPECT_THROW(jaccard_coef_loss(torch::zeros({1, 1, 2, 2}), torch::zeros({1, 1, 2, 3})), c10::Error);
  EXPECT_THROW(jaccard_coef_loss(torch::zeros({2, 2}), torch::zeros({2, 2})), c10::Error);
}

TEST(SegmentationMetrics, match_a_hand_computed_2x2_example) {
  // y_true [[1,0],[1,0]], y_pred [[.6,.7],[.2,.1]]
  // soft: I = .6 + .2 = .8, S = 1.6 + .7 + 1.2 + .1 = 3.6, jac = .8 / 2.8 = .285714
  // hard: [[1,1],[0,0]]: I = 1, S = 4, jac = 1 / 3; accuracy: right at (0,0) and (1,1) = .5
  const SegMetrics m = segmentation_metrics(t({1, 0, 1, 0}), t({.6, .7, .2, .1}));
  EXPECT_NEAR(m.jaccard_soft, 0.8 / 2.8, 1e-6);
  EXPECT_NEAR(m.jaccard_hard, 1.0 / 3.0, 1e-6);
  EXPECT_NEAR(m.accuracy, 0.5, 1e-9);
}

TEST(SegmentationMetrics, soft_jaccard_is_one_minus_the_loss) {
  const torch::Tensor y_true = t({1, 0, 1, 0, 1, 1, 0, 0}, 1, 2);
  const torch::Tensor y_pred = t({.5, .5, 1, 0, .9, .3, .2, .1}, 1, 2);
  EXPECT_NEAR(segmentation_metrics(y_true, y_pred).jaccard_soft,
              1.0 - jaccard_coef_loss(y_true, y_pred).item<double>(), 1e-6);
}

TEST(SegmentationMetrics, threshold_is_strictly_above_one_half) {
  const SegMetrics m = segmentation_metrics(t({1, 1, 0, 0}), torch::full({1, 1, 2, 2}, 0.5));
  EXPECT_NEAR(m.jaccard_hard, 0.0, 1e-9);  // nothing predicted
  EXPECT_NEAR(m.accuracy, 0.5, 1e-9);
}

TEST(SegmentationMetrics, all_zero_prediction_gives_jaccard_near_zero) {
  const SegMetrics m = segmentation_metrics(t({1, 0, 1, 0}), torch::zeros({1, 1, 2, 2}));
  EXPECT_LT(m.jaccard_soft, 1e-9);
  EXPECT_LT(m.jaccard_hard, 1e-9);
  EXPECT_NEAR(m.accuracy, 0.5, 1e-9);  // the two background pixels
}

TEST(SegmentationMetrics, accept_a_prediction_that_requires_grad) {
  const torch::Tensor y_pred = t({.6, .7, .2, .1}).requires_grad_();
  const SegMetrics m = segmentation_metrics(t({1, 0, 1, 0}), y_pred);
  EXPECT_NEAR(m.accuracy, 0.5, 1e-9);
  EXPECT_FALSE(y_pred.grad().defined());
}

UNet seeded_unet(uint64_t seed, UNetOptions options = {}) {
  torch::manual_seed(seed);
  return UNet(options);
}

TEST(UNet, output_is_probabilities_of_the_input_size) {
  UNet net = seeded_unet(1);
  const torch::Tensor y = net->forward(torch::randn({2, 6, 16, 12}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 1, 16, 12}));
  EXPECT_GT(y.min().item<float>(), 0.0f);
  EXPECT_LT(y.max().item<float>(), 1.0f);
}

TEST(UNet, parameter_names_read_as_layers) {
  UNet net = seeded_unet(1, UNetOptions{6, 1, 2, 8});
  std::vector<std::string> names;
  for (const auto& p : net->named_parameters()) names.push_back(p.key());
  const std::vector<std::string> expected = {
      "enc0.conv1.weight", "enc0.conv1.bias", "enc0.conv2.weight", "enc0.conv2.bias",
      "enc1.conv1.weight", "enc1.conv1.bias", "enc1.conv2.weight", "enc1.conv2.bias",
      "dec0.up.weight",    "dec0.up.bias",    "dec0.conv1.weight", "dec0.conv1.bias",
      "dec0.conv2.weight", "dec0.conv2.bias", "head.weight",       "head.bias"};
  EXPECT_EQ(names, expected);
}

TEST(UNet, default_architecture_has_the_expected_layers_and_size) {
  UNet net = seeded_unet(1);
  const std::regex layer(R"((enc[0-2]\.conv[12]|dec[01]\.(up|conv1|conv2)|head)\.(weight|bias))");
  int64_t count = 0;
  for (const auto& p : net->named_parameters()) {
    EXPECT_TRUE(std::regex_match(p.key(), layer)) << p.key();
    count += p.value().numel();
  }
  EXPECT_EQ(net->named_parameters().size(), 26u);  // 13 layers, weight + bias
  // enc 1024 + 3488 + 13888, dec1 9008, dec0 2264, head 9 (see the level widths 8, 16, 32)
  EXPECT_EQ(count, 29681);
}

TEST(UNet, same_seed_gives_identical_outputs) {
  torch::manual_seed(99);
  const torch::Tensor x = torch::randn({1, 6, 8, 8});
  const torch::Tensor a = seeded_unet(5)->forward(x);
  const torch::Tensor b = seeded_unet(5)->forward(x);
  const torch::Tensor c = seeded_unet(6)->forward(x);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
}

TEST(UNet, every_parameter_gets_a_gradient_from_the_loss) {
  UNet net = seeded_unet(3);
  const torch::Tensor x = torch::randn({2, 6, 8, 8});
  const torch::Tensor y = (torch::rand({2, 1, 8, 8}) > 0.5).to(torch::kFloat);
  jaccard_coef_loss(y, net->forward(x)).backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(UNet, rejects_sizes_not_divisible_by_the_pooling) {
  UNet net = seeded_unet(1);  // depth 3: multiples of 4
  EXPECT_THROW(net->forward(torch::zeros({1, 6, 18, 16})), c10::Error);
  EXPECT_THROW(net->forward(torch::zeros({1, 5, 16, 16})), c10::Error);
  EXPECT_THROW(UNet(UNetOptions{6, 1, 0, 8}), std::invalid_argument);
}

TEST(UNet, depth_one_is_a_plain_conv_stack) {
  UNet net = seeded_unet(1, UNetOptions{3, 2, 1, 4});
  EXPECT_EQ(net->forward(torch::zeros({1, 3, 5, 7})).sizes(), (std::vector<int64_t>{1, 2, 5, 7}));
  EXPECT_TRUE(net->dec.empty());
}

}  // namespace
}  // namespace gradwatch::train
