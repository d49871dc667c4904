#include "unet.h"

#include <stdexcept>
#include <string>

namespace gradwatch::train {
namespace {

torch::nn::Conv2d conv3x3(int in_channels, int out_channels) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, out_channels, 3).padding(1));
}

}  // namespace

ConvBlockImpl::ConvBlockImpl(int in_channels, int out_channels)
    : conv1(register_module("conv1", conv3x3(in_channels, out_channels))),
      conv2(register_module("conv2", conv3x3(out_channels, out_channels))) {}

torch::Tensor ConvBlockImpl::forward(const torch::Tensor& x) {
  return torch::relu(conv2(torch::relu(conv1(x))));
}

UpBlockImpl::UpBlockImpl(int in_channels, int out_channels)
    : up(register_module("up", torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(
                                    in_channels, out_channels, 2).stride(2)))),
      conv1(register_module("conv1", conv3x3(2 * out_channels, out_channels))),
      conv2(register_module("conv2", conv3x3(out_channels, out_channels))) {}

torch::Tensor UpBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& skip) {
  const torch::Tensor merged = torch::cat({up(x), skip}, /*dim=*/1);
  return torch::relu(conv2(torch::relu(conv1(merged))));
}

UNetImpl::UNetImpl(const UNetOptions& opts) : options(opts) {
  if (opts.in_channels < 1 || opts.out_channels < 1 || opts.depth < 1 || opts.base < 1) {
    throw std::invalid_argument("UNetOptions: in_channels, out_channels, depth and base must be >= 1");
  }
  // Registration order fixes the order of parameters(): encoder top-down, decoder bottom-up, head.
  int in = opts.in_channels;
  for (int level = 0; level < opts.depth; ++level) {
    const int width = opts.base << level;
    enc.push_back(register_module("enc" + std::to_string(level), ConvBlock(in, width)));
    in = width;
  }
  dec.resize(static_cast<size_t>(opts.depth - 1), UpBlock(nullptr));
  for (int level = opts.depth - 2; level >= 0; --level) {
    dec[level] = register_module("dec" + std::to_string(level),
                                 UpBlock(opts.base << (level + 1), opts.base << level));
  }
  head = register_module(
      "head", torch::nn::Conv2d(torch::nn::Conv2dOptions(opts.base, opts.out_channels, 1)));
}

torch::Tensor UNetImpl::forward(const torch::Tensor& x) {
  const int64_t multiple = int64_t{1} << (options.depth - 1);
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels, "UNet: expected input [N, ",
              options.in_channels, ", H, W], got ", x.sizes());
  TORCH_CHECK(x.size(2) % multiple == 0 && x.size(3) % multiple == 0, "UNet: H and W must be ",
              "divisible by ", multiple, " (2^(depth-1)), got ", x.sizes());
  std::vector<torch::Tensor> skips;
  torch::Tensor h = x;
  for (size_t level = 0; level < enc.size(); ++level) {
    h = enc[level](h);
    if (level + 1 < enc.size()) {
      skips.push_back(h);
      h = torch::max_pool2d(h, /*kernel_size=*/2);
    }
  }
  for (size_t level = dec.size(); level-- > 0;) h = dec[level](h, skips[level]);
  return torch::sigmoid(head(h));
}

}  // namespace gradwatch::train
