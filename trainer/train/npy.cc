#include "npy.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace gradwatch::train {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The header is a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// This parser accepts exactly the subset NumPy writes: string keys, and string, True/False or
// tuple-of-integers values.
struct HeaderFields {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  bool has_descr = false, has_order = false, has_shape = false;
};

class HeaderParser {
 public:
  explicit HeaderParser(const std::string& text) : s_(text) {}

  HeaderFields parse() {
    HeaderFields f;
    expect('{');
    while (!peek_is('}')) {
      const std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        f.descr = parse_string();
        f.has_descr = true;
      } else if (key == "fortran_order") {
        f.fortran_order = parse_bool();
        f.has_order = true;
      } else if (key == "shape") {
        f.shape = parse_tuple();
        f.has_shape = true;
      } else {
        throw std::invalid_argument("unexpected key '" + key + "'");
      }
      if (!peek_is('}')) expect(',');
    }
    expect('}');
    return f;
  }

 private:
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool peek_is(char c) {
    skip_space();
    return i_ < s_.size() && s_[i_] == c;
  }
  void expect(char c) {
    if (!peek_is(c)) {
      throw std::invalid_argument(std::string("expected '") + c + "' at offset " +
                                  std::to_string(i_));
    }
    ++i_;
  }
  std::string parse_string() {
    skip_space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) {
      throw std::invalid_argument("expected a quoted string at offset " + std::to_string(i_));
    }
    const char quote = s_[i_++];
    const size_t end = s_.find(quote, i_);
    if (end == std::string::npos) throw std::invalid_argument("unterminated string");
    std::string out = s_.substr(i_, end - i_);
    i_ = end + 1;
    return out;
  }
  bool parse_bool() {
    skip_space();
    for (const char* word : {"True", "False"}) {
      if (s_.compare(i_, std::strlen(word), word) == 0) {
        i_ += std::strlen(word);
        return word[0] == 'T';
      }
    }
    throw std::invalid_argument("expected True or False at offset " + std::to_string(i_));
  }
  std::vector<int64_t> parse_tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (!peek_is(')')) {
      if (!std::isdigit(static_cast<unsigned char>(s_[i_]))) {
        throw std::invalid_argument("expected a dimension at offset " + std::to_string(i_));
      }
      int64_t d = 0;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
        d = d * 10 + (s_[i_++] - '0');
        if (d > (int64_t{1} << 40)) throw std::invalid_argument("dimension too large");
      }
      dims.push_back(d);
      if (!peek_is(')')) expect(',');
    }
    expect(')');
    return dims;
  }

  const std::string& s_;
  size_t i_ = 0;
};

NpyDtype dtype_from_descr(const std::string& descr, const std::string& source) {
  // One-byte types carry no byte order; NumPy writes '|', but '<' and '=' mean the same.
  if (descr == "<f4") return NpyDtype::kFloat32;
  if (descr == "|u1" || descr == "<u1" || descr == "=u1") return NpyDtype::kUint8;
  if (descr == "|b1" || descr == "<b1" || descr == "=b1") return NpyDtype::kBool;
  fail(source, "dtype '" + descr + "' is not supported (expected '<f4', '|u1' or '|b1')");
}

// Reads the magic, version and header length; returns the header text and sets `data_offset`.
std::string read_header_text(const std::string& bytes, const std::string& source,
                             size_t& data_offset) {
  if (bytes.size() < kMagicLen + 4 || bytes.compare(0, kMagicLen, kMagic, kMagicLen) != 0) {
    fail(source, "not a .npy file (bad magic)");
  }
  const auto major = static_cast<uint8_t>(bytes[6]);
  const auto u8 = [&](size_t i) { return static_cast<size_t>(static_cast<uint8_t>(bytes[i])); };
  size_t header_len = 0;
  size_t prefix = 0;
  if (major == 1) {
    header_len = u8(8) | u8(9) << 8;
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(source, "unreadable header: file truncated");
    header_len = u8(8) | u8(9) << 8 | u8(10) << 16 | u8(11) << 24;
    prefix = 12;
  } else {
    fail(source, "unsupported .npy format version " + std::to_string(major));
  }
  if (bytes.size() < prefix + header_len) fail(source, "unreadable header: file truncated");
  data_offset = prefix + header_len;
  return bytes.substr(prefix, header_len);
}

// Python's repr of a shape tuple, as NumPy writes it: "()", "(5,)", "(2, 3)".
std::string python_tuple(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

}  // namespace

const char* npy_descr(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::kFloat32: return "<f4";
    case NpyDtype::kUint8: return "|u1";
    case NpyDtype::kBool: return "|b1";
  }
  return "?";
}

int64_t npy_itemsize(NpyDtype dtype) { return dtype == NpyDtype::kFloat32 ? 4 : 1; }

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

NpyArray parse_npy(const std::string& bytes, const std::string& source) {
  size_t data_offset = 0;
  const std::string header = read_header_text(bytes, source, data_offset);
  HeaderFields fields;
  try {
    fields = HeaderParser(header).parse();
  } catch (const std::invalid_argument& e) {
    fail(source, std::string("unreadable header: ") + e.what());
  }
  if (!fields.has_descr || !fields.has_order || !fields.has_shape) {
    fail(source, "unreadable header: needs 'descr', 'fortran_order' and 'shape'");
  }
  if (fields.fortran_order) fail(source, "Fortran-order arrays are not supported (save in C order)");
  NpyArray array;
  array.dtype = dtype_from_descr(fields.descr, source);
  array.shape = fields.shape;
  const int64_t expected = array.numel() * npy_itemsize(array.dtype);
  const auto actual = static_cast<int64_t>(bytes.size() - data_offset);
  if (actual != expected) {
    fail(source, "data has " + std::to_string(actual) + " bytes, shape " +
                     shape_string(array.shape) + " of '" + fields.descr + "' needs " +
                     std::to_string(expected));
  }
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data_offset), bytes.end());
  return array;
}

NpyArray read_npy(const std::string& path) {
  if (!host_is_little_endian()) fail(path, ".npy support needs a little-endian host");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open for reading");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "read error");
  return parse_npy(bytes, path);
}

void save_npy(const std::string& path, const NpyArray& array) {
  const int64_t expected = array.numel() * npy_itemsize(array.dtype);
  if (static_cast<int64_t>(array.data.size()) != expected) {
    fail(path, "cannot save: " + std::to_string(array.data.size()) + " bytes for shape " +
                   shape_string(array.shape));
  }
  std::string header = std::string("{'descr': '") + npy_descr(array.dtype) +
                       "', 'fortran_order': False, 'shape': " + python_tuple(array.shape) + ", }";
  // Pad with spaces and end with '\n' so that magic + version + length + header is a multiple of 64.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) fail(path, "cannot open for writing");
  out.write(kMagic, kMagicLen);
  const char version_and_len[4] = {1, 0, static_cast<char>(header.size() & 0xff),
                                   static_cast<char>(header.size() >> 8)};
  out.write(version_and_len, 4);
  out << header;
  out.write(reinterpret_cast<const char*>(array.data.data()),
            static_cast<std::streamsize>(array.data.size()));
  if (!out) fail(path, "write error");
}

}  // namespace gradwatch::train
