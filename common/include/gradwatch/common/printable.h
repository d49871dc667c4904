// Untrusted text (run ids a monitor echoes, layer names, event messages, job logs) made
// safe for a terminal: control bytes other than newline and tab, DEL, and the C1
// controls (U+0080..U+009F, which some terminals honour in UTF-8) are written as visible
// escapes (\x1b, \u009b), so no text from a run can move the cursor, retitle the
// window or hide what precedes it. Everything else, UTF-8 included, passes unchanged.
#pragma once

#include <cstdio>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>

namespace gradwatch {

// Appends `c` (the byte after any 0xC2 lead byte already handled) as it may be shown.
inline void AppendPrintable(std::string& out, unsigned char c) {
  if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  } else {
    out += static_cast<char>(c);
  }
}

inline std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {  // a C1 control in UTF-8
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", next);
      out += buf;
      ++i;
    } else {
      AppendPrintable(out, c);
    }
  }
  return out;
}

// A stream buffer that writes everything through Printable to another stream. A 0xC2
// at the end of one write is held until the next byte decides what it is.
class PrintableBuf : public std::streambuf {
 public:
  explicit PrintableBuf(std::ostream& target) : target_(target) {}
  ~PrintableBuf() override {
    if (held_) target_ << '\xc2';
    target_.flush();
  }

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::string text;
    if (held_) text += '\xc2';
    text.append(s, static_cast<size_t>(n));
    held_ = !text.empty() && text.back() == '\xc2';
    if (held_) text.pop_back();
    target_ << Printable(text);
    return n;
  }
  int_type overflow(int_type ch) override {
    if (ch == traits_type::eof()) return traits_type::not_eof(ch);
    char c = traits_type::to_char_type(ch);
    xsputn(&c, 1);
    return ch;
  }
  int sync() override {  // a held 0xC2 stays held: it may begin a C1 control
    target_.flush();
    return 0;
  }

 private:
  std::ostream& target_;
  bool held_ = false;
};

// An ostream over PrintableBuf.
class PrintableStream : public std::ostream {
 public:
  explicit PrintableStream(std::ostream& target) : std::ostream(nullptr), buf_(target) { rdbuf(&buf_); }

 private:
  PrintableBuf buf_;
};

}  // namespace gradwatch
