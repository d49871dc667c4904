// The .npy reader and writer: NumPy's exact bytes, round trips, and every refusal.
#include "train/npy.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

namespace gradwatch::train {
namespace {

// np.save(f, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)): 10 bytes of magic, version and
// header length (118 = 0x76), a 118-byte header padded to a 128-byte boundary, then the data.
std::string numpy_2x3_float32() {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  header += std::string(118 - header.size() - 1, ' ') + "\n";
  std::string bytes = std::string("\x93NUMPY\x01\x00\x76\x00", 10) + header;
  for (float v : {1.f, 2.f, 3.f, 4.f, 5.f, 6.f}) bytes.append(reinterpret_cast<const char*>(&v), 4);
  return bytes;
}

std::string npy_with_header(const std::string& dict, const std::string& data) {
  std::string header = dict + "\n";
  return std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(header.size()) + '\0' + header +
         data;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / ("gradwatch_npy_" + name)).string();
}

std::string error_of(const std::string& bytes) {
  try {
    parse_npy(bytes, "x.npy");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Npy, reads_the_bytes_numpy_writes) {
  const NpyArray a = parse_npy(numpy_2x3_float32(), "a.npy");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.dtype, NpyDtype::kFloat32);
  float last = 0;
  std::memcpy(&last, a.data.data() + 20, 4);
  EXPECT_EQ(last, 6.f);
}

TEST(Npy, save_writes_the_same_bytes_as_numpy) {
  NpyArray a;
  a.shape = {2, 3};
  const std::string expected = numpy_2x3_float32();
  a.data.assign(expected.end() - 24, expected.end());
  const std::string path = temp_path("same_bytes.npy");
  save_npy(path, a);
  std::ifstream in(path, std::ios::binary);
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, expected);
}

TEST(Npy, round_trips_each_dtype_and_rank) {
  for (NpyDtype dtype : {NpyDtype::kFloat32, NpyDtype::kUint8, NpyDtype::kBool}) {
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{}, {5}, {2, 3, 4}, {0, 3}}) {
      NpyArray a;
      a.dtype = dtype;
      a.shape = shape;
      a.data.resize(static_cast<size_t>(a.numel() * npy_itemsize(dtype)));
      for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = static_cast<uint8_t>(i % 2);
      const std::string path = temp_path("round_trip.npy");
      save_npy(path, a);
      const NpyArray b = read_npy(path);
      EXPECT_EQ(b.shape, a.shape) << npy_descr(dtype) << " " << shape_string(shape);
      EXPECT_EQ(b.dtype, a.dtype);
      EXPECT_EQ(b.data, a.data);
    }
  }
}

TEST(Npy, reads_a_version_2_header) {
  const std::string header = "{'shape': (2,), 'fortran_order': False, 'descr': '|u1'}\n";
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  bytes += static_cast<char>(header.size());
  bytes += std::string(3, '\0') + header + std::string("\x01\x00", 2);
  const NpyArray a = parse_npy(bytes, "v2.npy");
  EXPECT_EQ(a.shape, std::vector<int64_t>{2});
  EXPECT_EQ(a.dtype, NpyDtype::kUint8);
  EXPECT_EQ(a.data, (std::vector<uint8_t>{1, 0}));
}

TEST(Npy, refuses_a_file_without_the_magic) {
  EXPECT_EQ(error_of("PK\x03\x04 not numpy at all"), "x.npy: not a .npy file (bad magic)");
}

TEST(Npy, refuses_big_endian_and_other_dtypes) {
  const std::string four(4, '\0');
  EXPECT_EQ(error_of(npy_with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", four)),
            "x.npy: dtype '>f4' is not supported (expected '<f4', '|u1' or '|b1')");
  EXPECT_NE(error_of(npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                                     four + four)).find("dtype '<f8' is not supported"),
            std::string::npos);
}

TEST(Npy, refuses_fortran_order) {
  EXPECT_EQ(error_of(npy_with_header("{'descr': '|u1', 'fortran_order': True, 'shape': (1,), }", "x")),
            "x.npy: Fortran-order arrays are not supported (save in C order)");
}

TEST(Npy, refuses_data_shorter_than_the_shape) {
  EXPECT_EQ(error_of(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                                     std::string(20, '\0'))),
            "x.npy: data has 20 bytes, shape [2, 3] of '<f4' needs 24");
}

TEST(Npy, refuses_an_unreadable_header) {
  EXPECT_NE(error_of(npy_with_header("{'descr': '<f4', 'shape': [2, 3]}", "")).find(
                "x.npy: unreadable header"),
            std::string::npos);
  EXPECT_EQ(error_of(npy_with_header("{'descr': '<f4'}", "")),
            "x.npy: unreadable header: needs 'descr', 'fortran_order' and 'shape'");
  EXPECT_EQ(error_of(std::string("\x93NUMPY\x01\x00\xff\x00{", 11)),
            "x.npy: unreadable header: file truncated");
}

TEST(Npy, names_the_path_of_a_missing_file) {
  const std::string path = temp_path("does_not_exist.npy");
  try {
    read_npy(path);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot open for reading");
  }
}

}  // namespace
}  // namespace gradwatch::train
