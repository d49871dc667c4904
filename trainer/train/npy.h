// A minimal reader and writer for NumPy .npy files, enough for datasets of images and masks.
//
// Supported: format versions 1.0, 2.0 and 3.0; C order only; the dtypes '<f4' (float32), '|u1'
// (uint8) and '|b1' (bool). Anything else is refused with a message that names the file and the
// problem. No torch here: the data loader turns the raw bytes into tensors.
//
// Byte order: data are kept as the little-endian bytes of the file; the readers of `data` assume a
// little-endian host (x86-64, aarch64), and read_npy checks that it is one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gradwatch::train {

enum class NpyDtype { kFloat32, kUint8, kBool };

// The descr string NumPy writes for a dtype: "<f4", "|u1" or "|b1".
const char* npy_descr(NpyDtype dtype);
// Bytes per element: 4, 1 or 1.
int64_t npy_itemsize(NpyDtype dtype);

struct NpyArray {
  std::vector<int64_t> shape;  // empty for a 0-d array
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<uint8_t> data;   // numel() * itemsize bytes, C order, little-endian

  int64_t numel() const;  // product of shape (1 for a 0-d array)
};

// Reads `path`. Throws std::runtime_error naming `path` and what was wrong: unreadable file, bad
// magic, unreadable header, unsupported version, dtype or Fortran order, or a data size that does
// not match the shape.
NpyArray read_npy(const std::string& path);

// Parses the bytes of a .npy file; `source` names it in error messages. Throws as read_npy.
NpyArray parse_npy(const std::string& bytes, const std::string& source);

// Writes `array` as a version 1.0 file, the way numpy.save does (header padded to 64 bytes).
// Throws std::runtime_error if the data size does not match the shape or the file cannot be written.
void save_npy(const std::string& path, const NpyArray& array);

// "[2, 3]": a shape for messages.
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace gradwatch::train
