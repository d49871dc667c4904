// PredictUpdate: the update an optimizer is about to apply, checked against the update it then
// applies (the test keeps a copy of the weights; PredictUpdate does not).
#include "gradwatch/torch/update_size.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace gradwatch::torchmon {
namespace {

struct Measured {
  double predicted, actual;
};

// Runs `steps` optimizer steps on a small regression; returns the prediction and the real
// ||w_after - w_before|| / ||w_before|| of the last one.
Measured Train(torch::nn::Linear& model, torch::optim::Optimizer& optimizer, int steps) {
  torch::manual_seed(3);
  Measured m{};
  for (int i = 0; i < steps; ++i) {
    torch::Tensor x = torch::randn({16, 8}), y = torch::randn({16, 4});
    optimizer.zero_grad();
    torch::mse_loss(model->forward(x), y).backward();
    m.predicted = PredictUpdate(optimizer).ratio;
    std::vector<torch::Tensor> before;
    for (const auto& p : model->parameters()) before.push_back(p.detach().clone());
    optimizer.step();
    double dw = 0, w = 0;
    auto params = model->parameters();
    for (size_t k = 0; k < params.size(); ++k) {
      dw += (params[k].detach() - before[k]).pow(2).sum().item<double>();
      w += before[k].pow(2).sum().item<double>();
    }
    m.actual = std::sqrt(dw / w);
  }
  return m;
}

TEST(PredictUpdate, matches_the_update_sgd_applies_with_momentum_nesterov_and_weight_decay) {
  for (int steps : {1, 5}) {
    torch::manual_seed(1);
    torch::nn::Linear model(8, 4);
    torch::optim::SGD sgd(model->parameters(),
                          torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(1e-3));
    Measured m = Train(model, sgd, steps);
    EXPECT_NEAR(m.predicted, m.actual, 1e-5 * m.actual) << steps << " steps";
  }
}

TEST(PredictUpdate, matches_the_update_plain_sgd_applies) {
  torch::manual_seed(1);
  torch::nn::Linear model(8, 4);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1));
  Measured m = Train(model, sgd, 3);
  EXPECT_NEAR(m.predicted, m.actual, 1e-5 * m.actual);
}

TEST(PredictUpdate, matches_the_update_adam_applies_from_its_first_step) {
  for (int steps : {1, 4}) {
    torch::manual_seed(1);
    torch::nn::Linear model(8, 4);
    torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01).weight_decay(1e-2));
    Measured m = Train(model, adam, steps);
    EXPECT_NEAR(m.predicted, m.actual, 1e-4 * m.actual) << steps << " steps";
  }
}

TEST(PredictUpdate, scales_with_the_learning_rate_in_force) {
  torch::manual_seed(1);
  torch::nn::Linear model(8, 4);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  Train(model, sgd, 3);
  torch::Tensor x = torch::randn({16, 8}), y = torch::randn({16, 4});
  sgd.zero_grad();
  torch::mse_loss(model->forward(x), y).backward();
  double base = PredictUpdate(sgd).ratio;
  for (auto& g : sgd.param_groups()) g.options().set_lr(1.0);  // a one-step x100
  EXPECT_NEAR(PredictUpdate(sgd).ratio, 100 * base, 1e-6 * base);
}

TEST(PredictUpdate, leaves_the_optimizer_state_untouched) {
  torch::manual_seed(1);
  torch::nn::Linear model(8, 4);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  Train(model, adam, 2);
  auto& state = static_cast<torch::optim::AdamParamState&>(
      *adam.state().at(c10::guts::to_string(model->weight.unsafeGetTensorImpl())));
  torch::Tensor m = state.exp_avg().clone();
  int64_t step = state.step();
  PredictUpdate(adam);
  EXPECT_TRUE(torch::equal(state.exp_avg(), m));
  EXPECT_EQ(state.step(), step);
}

TEST(PredictUpdate, does_not_measure_other_optimizers) {
  torch::nn::Linear model(8, 4);
  torch::optim::RMSprop rms(model->parameters(), torch::optim::RMSpropOptions(0.01));
  EXPECT_TRUE(std::isnan(PredictUpdate(rms).ratio));
}

}  // namespace
}  // namespace gradwatch::torchmon
