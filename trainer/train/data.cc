#include "data.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>

#include "npy.h"

namespace gradwatch::train {
namespace {

namespace fs = std::filesystem;

constexpr double kPi = 3.14159265358979323846;

// Uniform double in [lo, hi) from the top 53 bits: the same on every standard library, unlike
// std::uniform_real_distribution.
double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

void check_options(const SyntheticOptions& o) {
  const bool ok = o.images >= 1 && o.size >= 1 && o.channels >= 1 &&
                  o.foreground_fraction >= 0.0 && o.foreground_fraction < 1.0 && o.noise >= 0.0 &&
                  o.val_fraction >= 0.0 && o.val_fraction < 1.0;
  if (!ok) {
    throw std::invalid_argument(
        "make_synthetic: need images, size, channels >= 1, foreground_fraction and val_fraction "
        "in [0, 1), noise >= 0");
  }
}

// One random disc or rectangle of about `area` pixels, as a [S, S] bool tensor. yy is [S, 1] and
// xx is [1, S], the pixel centres.
torch::Tensor random_shape(std::mt19937_64& rng, double area, const torch::Tensor& yy,
                           const torch::Tensor& xx) {
  const auto size = static_cast<double>(xx.size(1));
  // Centres away from the border, so that clipping does not eat much of the area.
  const double cy = uniform(rng, 0.15 * size, 0.85 * size);
  const double cx = uniform(rng, 0.15 * size, 0.85 * size);
  if (uniform(rng, 0.0, 1.0) < 0.5) {
    const double r2 = area / kPi;
    return (yy - cy).square() + (xx - cx).square() <= r2;
  }
  const double aspect = std::exp(uniform(rng, std::log(0.5), std::log(2.0)));
  const double w = std::sqrt(area * aspect);
  const double h = area / w;
  return ((yy - cy).abs() <= h / 2) & ((xx - cx).abs() <= w / 2);
}

// A [S, S] mask: shapes of 30..60% of the target area each, added until the union covers 90% of
// the target (the last shape overshoots a little, so the mean lands near the target).
torch::Tensor random_mask(std::mt19937_64& rng, int64_t size, double fraction) {
  const torch::Tensor coords = torch::arange(size, torch::kFloat) + 0.5;
  const torch::Tensor yy = coords.view({size, 1});
  const torch::Tensor xx = coords.view({1, size});
  torch::Tensor mask = torch::zeros({size, size}, torch::kBool);
  const double target = fraction * static_cast<double>(size * size);
  for (int shape = 0; shape < 16 && mask.sum().item<int64_t>() < 0.9 * target; ++shape) {
    mask = mask | random_shape(rng, uniform(rng, 0.3, 0.6) * target, yy, xx);
  }
  return mask;
}

// How much brighter (or darker) channel c is inside the mask: a fixed cycle, so that every channel
// count has an informative channel. Unit-scale contrasts matter: at 0.3 the default-initialised
// U-Net sat for ~300 steps predicting all foreground before it started to learn.
double channel_contrast(int64_t c) {
  constexpr double kContrast[3] = {2.0, -1.2, 0.8};
  return kContrast[c % 3];
}

// [C, S, S] image without noise: per channel a level, a random low-frequency wave and the contrast
// inside the mask.
torch::Tensor render_image(std::mt19937_64& rng, const torch::Tensor& mask, int64_t channels) {
  const int64_t size = mask.size(0);
  const torch::Tensor coords = torch::arange(size, torch::kFloat) / static_cast<double>(size);
  const torch::Tensor yy = coords.view({size, 1});
  const torch::Tensor xx = coords.view({1, size});
  const torch::Tensor fg = mask.to(torch::kFloat);
  std::vector<torch::Tensor> planes;
  for (int64_t c = 0; c < channels; ++c) {
    const double level = uniform(rng, -0.1, 0.1);
    const double fy = uniform(rng, 0.5, 2.0), fx = uniform(rng, 0.5, 2.0);
    const double phase = uniform(rng, 0.0, 2 * kPi);
    const torch::Tensor wave = 0.3 * torch::sin(2 * kPi * (fy * yy + fx * xx) + phase);
    planes.push_back(level + wave + channel_contrast(c) * fg);
  }
  return torch::stack(planes);
}

}  // namespace

int64_t Dataset::size() const { return images.defined() ? images.size(0) : 0; }

std::pair<Dataset, Dataset> make_synthetic(const SyntheticOptions& o) {
  check_options(o);
  std::mt19937_64 rng(o.seed);
  std::vector<torch::Tensor> images, masks;
  for (int64_t i = 0; i < o.images; ++i) {
    const torch::Tensor mask = random_mask(rng, o.size, o.foreground_fraction);
    images.push_back(render_image(rng, mask, o.channels));
    masks.push_back(mask.to(torch::kFloat).unsqueeze(0));
  }
  // The noise comes from a generator of its own, so the global torch seed neither changes the data
  // nor is changed by it.
  at::Generator noise_rng = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  torch::Tensor all_images = torch::stack(images);
  all_images += o.noise * torch::randn(all_images.sizes(), noise_rng, torch::kFloat);
  return split_train_val(Dataset{all_images, torch::stack(masks)}, o.val_fraction);
}

std::pair<Dataset, Dataset> split_train_val(const Dataset& all, double val_fraction) {
  const int64_t n = all.size();
  const int64_t val = ValidationCount(n, val_fraction);
  if (val < 0 || val > n) throw std::invalid_argument("split_train_val: val_fraction must be in [0, 1]");
  return {Dataset{all.images.narrow(0, 0, n - val), all.masks.narrow(0, 0, n - val)},
          Dataset{all.images.narrow(0, n - val, val), all.masks.narrow(0, n - val, val)}};
}

Dataset augment_x6(const Dataset& data) {
  if (data.images.size(2) != data.images.size(3)) {
    throw std::invalid_argument("augment_x6: needs square images, got H " +
                                std::to_string(data.images.size(2)) + " and W " +
                                std::to_string(data.images.size(3)));
  }
  const auto x6 = [](const torch::Tensor& x) {
    return torch::cat({x, torch::rot90(x, 1, {2, 3}), torch::rot90(x, 2, {2, 3}),
                       torch::rot90(x, 3, {2, 3}), torch::flip(x, {3}), torch::flip(x, {2})});
  };
  return Dataset{x6(data.images), x6(data.masks)};
}

Dataset select_items(const Dataset& data, const std::vector<int64_t>& indices) {
  const torch::Tensor index = torch::tensor(indices, torch::kLong);
  return Dataset{data.images.index_select(0, index), data.masks.index_select(0, index)};
}

// ---- load_dataset_dir

namespace {

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

// The .npy bytes as a CPU float32 tensor of the array's shape. uint8 is divided by 255 when
// `scale_uint8` (images), kept as 0..255 otherwise (masks); bool becomes 0 or 1.
torch::Tensor to_float_tensor(const NpyArray& a, bool scale_uint8) {
  const auto dtype = a.dtype == NpyDtype::kFloat32 ? torch::kFloat
                     : a.dtype == NpyDtype::kUint8 ? torch::kUInt8 : torch::kBool;
  // from_blob does not own the bytes; the conversion or clone copies them out.
  const torch::Tensor view =
      torch::from_blob(const_cast<uint8_t*>(a.data.data()), a.shape, torch::TensorOptions(dtype));
  if (a.dtype == NpyDtype::kFloat32) return view.clone();
  if (a.dtype == NpyDtype::kUint8 && scale_uint8) return view.to(torch::kFloat) / 255.0;
  return view.to(torch::kFloat);
}

struct ImageShape {
  int64_t c, h, w;
  std::string from;  // the file that set it, for messages
};

torch::Tensor read_image(const std::string& path, const ImageShape* expected) {
  const NpyArray a = read_npy(path);
  if (a.shape.size() != 3) {
    fail(path + ": image has shape " + shape_string(a.shape) + ", expected [C, H, W]");
  }
  if (a.dtype == NpyDtype::kBool) {
    fail(path + ": image dtype '|b1' is not supported (expected '<f4' or '|u1')");
  }
  if (expected != nullptr && a.shape[0] != expected->c) {
    fail(path + " has " + std::to_string(a.shape[0]) + " channels, expected " +
         std::to_string(expected->c) + " (from " + expected->from + ")");
  }
  if (expected != nullptr && (a.shape[1] != expected->h || a.shape[2] != expected->w)) {
    fail(path + " is " + std::to_string(a.shape[1]) + "x" + std::to_string(a.shape[2]) +
         " (HxW), expected " + std::to_string(expected->h) + "x" + std::to_string(expected->w) +
         " (from " + expected->from + ")");
  }
  torch::Tensor image = to_float_tensor(a, /*scale_uint8=*/true);
  if (!torch::isfinite(image).all().item<bool>()) fail(path + ": image has non-finite values");
  return image;
}

// The value at flat index i of a mask array.
double mask_value(const NpyArray& a, int64_t i) {
  if (a.dtype != NpyDtype::kFloat32) return a.data[static_cast<size_t>(i)];
  float f = 0;
  std::memcpy(&f, a.data.data() + 4 * i, 4);
  return f;
}

// The first flat index whose value is neither 0 nor 1 (NaN included), or -1.
int64_t first_non_binary(const NpyArray& a) {
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double v = mask_value(a, i);
    if (v != 0.0 && v != 1.0) return i;
  }
  return -1;
}

torch::Tensor read_mask(const std::string& path, const std::string& image_path, int64_t h,
                        int64_t w) {
  const NpyArray a = read_npy(path);
  const bool hw = a.shape.size() == 2 && a.shape[0] == h && a.shape[1] == w;
  const bool one_hw = a.shape.size() == 3 && a.shape[0] == 1 && a.shape[1] == h && a.shape[2] == w;
  if (!hw && !one_hw) {
    fail(path + ": mask has shape " + shape_string(a.shape) + ", expected [" + std::to_string(h) +
         ", " + std::to_string(w) + "] like " + image_path);
  }
  const int64_t bad = first_non_binary(a);
  if (bad >= 0) {
    std::ostringstream message;
    message << path << ": mask values must be 0 or 1, found " << mask_value(a, bad)
            << " at flat index " << bad;
    fail(message.str());
  }
  return to_float_tensor(a, /*scale_uint8=*/false).view({1, h, w});
}

std::vector<fs::path> list_images(const fs::path& images_dir, const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(images_dir, ec)) {
    fail(dir + ": no images/ folder (expected " + dir + "/images/<name>.npy and " + dir +
         "/masks/<name>.npy)");
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(images_dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".npy") files.push_back(entry.path());
  }
  if (files.empty()) fail(images_dir.string() + ": no .npy files");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Dataset load_dataset_dir(const std::string& dir) {
  const fs::path root(dir);
  const std::vector<fs::path> files = list_images(root / "images", dir);
  const auto n = static_cast<int64_t>(files.size());
  Dataset out;
  ImageShape shape{};
  for (int64_t i = 0; i < n; ++i) {
    const std::string image_path = files[i].string();
    const fs::path mask_path = root / "masks" / files[i].filename();
    if (!fs::exists(mask_path)) {
      fail("missing mask for \"" + image_path + "\" (expected \"" + mask_path.string() + "\")");
    }
    const torch::Tensor image = read_image(image_path, i == 0 ? nullptr : &shape);
    if (i == 0) {
      shape = ImageShape{image.size(0), image.size(1), image.size(2), image_path};
      // Allocated once the shape is known: the case's 708 x 6 x 650 x 650 should not be held twice.
      out.images = torch::empty({n, shape.c, shape.h, shape.w}, torch::kFloat);
      out.masks = torch::empty({n, 1, shape.h, shape.w}, torch::kFloat);
    }
    out.images[i].copy_(image);
    out.masks[i].copy_(read_mask(mask_path.string(), image_path, shape.h, shape.w));
  }
  return out;
}

}  // namespace gradwatch::train
