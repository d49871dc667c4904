// Segmentation data for gradwatch-train: a synthetic set that a small U-Net learns in a few hundred
// steps, the case's x6 mirror/rotation augmentation, and a loader for .npy files on disk.
//
// All functions here run at configuration time, on the CPU, and throw std::runtime_error (or
// std::invalid_argument for bad arguments) with a message that names the file and the problem.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "config.h"  // SyntheticOptions

namespace gradwatch::train {

struct Dataset {
  torch::Tensor images;  // [N, C, H, W] float32
  torch::Tensor masks;   // [N, 1, H, W] float32, values in {0, 1}

  int64_t size() const;  // N; 0 for a default-constructed Dataset
};

// A synthetic set: each mask is a union of random discs and rectangles covering about
// options.foreground_fraction of the image; each image channel is a level near 0, a random
// low-frequency wave of amplitude 0.3, a channel-dependent contrast inside the mask (+2, -1.2,
// +0.8, repeating over the channels) and Gaussian noise of standard deviation options.noise.
// The same options give the same tensors on every call, whatever the global torch seed (which is
// left untouched). Returns (train, val): the last ValidationCount(images, val_fraction) items are
// the validation split. Throws std::invalid_argument on options outside their documented range.
std::pair<Dataset, Dataset> make_synthetic(const SyntheticOptions& options);

// Splits `all` into (first N - k items, last k items) with k = ValidationCount(N, val_fraction).
// The parts share storage with `all`.
std::pair<Dataset, Dataset> split_train_val(const Dataset& all, double val_fraction);

// The case's augmentation: 6N items, in blocks of N: the originals, rotated by 90, 180 and 270
// degrees (torch::rot90 over H, W: counter-clockwise), flipped left-right (along W) and flipped
// upside-down (along H). Images and masks get the same transform; item k*N + i is transform k of
// item i. Throws std::invalid_argument unless H == W (a rotated block must stack with the others).
Dataset augment_x6(const Dataset& data);

// The items at `indices`, in that order (a batch); copies.
Dataset select_items(const Dataset& data, const std::vector<int64_t>& indices);

// Loads a dataset stored as
//   dir/images/<name>.npy   [C, H, W], '<f4' (float32, used as is) or '|u1' (uint8, divided by 255)
//   dir/masks/<name>.npy    [H, W] or [1, H, W], '|u1', '|b1' or '<f4', every value 0 or 1
// Every image needs a mask of the same name and the same H and W; all images share C, H and W.
// Items are ordered by name; masks without an image are ignored. Throws std::runtime_error naming
// the file on: a missing images/ folder or no .npy files in it, a missing mask, an unreadable or
// unsupported .npy (see npy.h), a wrong rank, dtype or size, a non-binary mask value, or a
// non-finite image value.
Dataset load_dataset_dir(const std::string& dir);

}  // namespace gradwatch::train
