// The U-Net of the case, small enough to train on a CPU: per level two 3x3 convolutions with ReLU
// (no batch norm, like the classic Keras U-Net), 2x2 max-pooling down, 2x2 transposed convolutions
// up, skip concatenation, and a 1x1 convolution with a sigmoid on top.
//
// Submodules carry readable names because the trainer reports per-layer gradient norms under the
// names of named_parameters(): "enc0.conv1.weight", ..., "enc2.conv2.bias" (the deepest level is the
// bottleneck), "dec1.up.weight", "dec1.conv1.weight", ..., "dec0.conv2.bias", "head.weight",
// "head.bias". Parameters use torch's default initialisation, so torch::manual_seed(s) before
// construction gives the same weights every time.
#pragma once

#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace gradwatch::train {

struct UNetOptions {
  int in_channels = 6;   // C of the input images (6 in the case)
  int out_channels = 1;  // channels of the predicted mask
  int depth = 3;         // levels, >= 1; input H and W must be divisible by 2^(depth - 1)
  int base = 8;          // channels of the first level, doubled at each level down
};

// One encoder level: conv1 (3x3, padding 1) + ReLU, conv2 (3x3, padding 1) + ReLU.
struct ConvBlockImpl : torch::nn::Module {
  ConvBlockImpl(int in_channels, int out_channels);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::Conv2d conv2{nullptr};
};
TORCH_MODULE(ConvBlock);

// One decoder level: `up` (2x2 transposed convolution, stride 2) doubles H and W and maps
// in_channels to out_channels; the skip (out_channels, from the encoder) is concatenated; then
// conv1 and conv2 (3x3 + ReLU) bring 2 * out_channels back to out_channels.
struct UpBlockImpl : torch::nn::Module {
  UpBlockImpl(int in_channels, int out_channels);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& skip);

  torch::nn::ConvTranspose2d up{nullptr};
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::Conv2d conv2{nullptr};
};
TORCH_MODULE(UpBlock);

struct UNetImpl : torch::nn::Module {
  // Throws std::invalid_argument if a field of `options` is < 1.
  explicit UNetImpl(const UNetOptions& options = {});

  // x: [N, in_channels, H, W] float, H and W divisible by 2^(depth - 1).
  // Returns probabilities in (0, 1), [N, out_channels, H, W]. Throws c10::Error on a bad shape.
  torch::Tensor forward(const torch::Tensor& x);

  UNetOptions options;
  std::vector<ConvBlock> enc;  // "enc<i>", level i has base * 2^i channels; the last is the bottleneck
  std::vector<UpBlock> dec;    // "dec<i>" brings level i + 1 back up to level i
  torch::nn::Conv2d head{nullptr};  // "head": 1x1 convolution to out_channels, before the sigmoid
};
TORCH_MODULE(UNet);

}  // namespace gradwatch::train
