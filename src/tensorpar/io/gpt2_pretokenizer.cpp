// Hand-written GPT-2 pre-tokenizer (see the header) and the Unicode class table it uses.
#include "tensorpar/io/gpt2_pretokenizer.hpp"

#include <algorithm>
#include <iterator>

namespace tensorpar::io {

namespace {

struct Range {
  uint32_t lo, hi;
  CharClass cls;
};
constexpr CharClass O = CharClass::Other, N = CharClass::Number, S = CharClass::Space;

// Non-ASCII code points that are not letters, sorted. Anything >= 0x80 not listed is a letter: most
// assigned code points are, and a few mistakes in rare scripts only change how a word is split.
constexpr Range kTable[] = {
    {0x80, 0x84, O},       {0x85, 0x85, S},       {0x86, 0x9f, O},       {0xa0, 0xa0, S},       {0xa1, 0xa9, O},
    {0xab, 0xb1, O},       {0xb2, 0xb3, N},       {0xb4, 0xb4, O},       {0xb6, 0xb8, O},       {0xb9, 0xb9, N},
    {0xbb, 0xbb, O},       {0xbc, 0xbe, N},       {0xbf, 0xbf, O},       {0xd7, 0xd7, O},       {0xf7, 0xf7, O},
    {0x2c2, 0x2c5, O},     {0x2d2, 0x2df, O},     {0x2e5, 0x2eb, O},     {0x2ed, 0x2ed, O},     {0x2ef, 0x36f, O},
    {0x375, 0x375, O},     {0x37e, 0x37e, O},     {0x384, 0x385, O},     {0x387, 0x387, O},     {0x3f6, 0x3f6, O},
    {0x482, 0x489, O},     {0x55a, 0x55f, O},     {0x589, 0x58a, O},     {0x591, 0x5c7, O},     {0x5f3, 0x5f4, O},
    {0x600, 0x61f, O},     {0x64b, 0x65f, O},     {0x660, 0x669, N},     {0x66a, 0x66d, O},     {0x670, 0x670, O},
    {0x6d4, 0x6d4, O},     {0x6d6, 0x6ed, O},     {0x6f0, 0x6f9, N},     {0x900, 0x903, O},     {0x93a, 0x93c, O},
    {0x93e, 0x94f, O},     {0x951, 0x957, O},     {0x962, 0x965, O},     {0x966, 0x96f, N},     {0x970, 0x970, O},
    {0xe31, 0xe31, O},     {0xe34, 0xe3a, O},     {0xe3f, 0xe3f, O},     {0xe47, 0xe4f, O},     {0xe50, 0xe59, N},
    {0xe5a, 0xe5b, O},     {0x1680, 0x1680, S},   {0x2000, 0x200a, S},   {0x200b, 0x2027, O},   {0x2028, 0x2029, S},
    {0x202a, 0x202e, O},   {0x202f, 0x202f, S},   {0x2030, 0x205e, O},   {0x205f, 0x205f, S},   {0x2060, 0x206f, O},
    {0x2070, 0x2070, N},   {0x2074, 0x2079, N},   {0x207a, 0x207e, O},   {0x2080, 0x2089, N},   {0x208a, 0x208e, O},
    {0x20a0, 0x20ff, O},   {0x2100, 0x214f, O},   {0x2150, 0x2182, N},   {0x2185, 0x2189, N},   {0x218a, 0x245f, O},
    {0x2460, 0x249b, N},   {0x249c, 0x24e9, O},   {0x24ea, 0x24ff, N},   {0x2500, 0x2775, O},   {0x2776, 0x2793, N},
    {0x2794, 0x2bff, O},   {0x2cf9, 0x2cff, O},   {0x2e00, 0x2fff, O},   {0x3000, 0x3000, S},   {0x3001, 0x3004, O},
    {0x3007, 0x3007, N},   {0x3008, 0x3020, O},   {0x3021, 0x3029, N},   {0x302a, 0x3030, O},   {0x3036, 0x3037, O},
    {0x3038, 0x303a, N},   {0x303d, 0x303f, O},   {0x3099, 0x309c, O},   {0x30a0, 0x30a0, O},   {0x30fb, 0x30fb, O},
    {0x3200, 0x33ff, O},   {0x4dc0, 0x4dff, O},   {0xa490, 0xa4cf, O},   {0xd800, 0xf8ff, O},   {0xfb29, 0xfb29, O},
    {0xfd3e, 0xfd3f, O},   {0xfe00, 0xfe19, O},   {0xfe20, 0xfe6f, O},   {0xfeff, 0xfeff, O},   {0xff01, 0xff0f, O},
    {0xff10, 0xff19, N},   {0xff1a, 0xff20, O},   {0xff3b, 0xff40, O},   {0xff5b, 0xff65, O},   {0xffe0, 0xffff, O},
    {0x1d000, 0x1d24f, O}, {0x1d7ce, 0x1d7ff, N}, {0x1f000, 0x1faff, O}, {0xe0000, 0xe01ef, O}, {0xf0000, 0x10ffff, O},
};

// One decoded character: its class and its length in bytes (invalid UTF-8: one byte, Other).
struct Char {
  CharClass cls;
  size_t len;
};

Char next_char(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {classify_code_point(b0), 1};
  size_t len;
  uint32_t cp;
  if (b0 >= 0xc2 && b0 <= 0xdf) { len = 2; cp = b0 & 0x1fu; }
  else if (b0 >= 0xe0 && b0 <= 0xef) { len = 3; cp = b0 & 0x0fu; }
  else if (b0 >= 0xf0 && b0 <= 0xf4) { len = 4; cp = b0 & 0x07u; }
  else return {CharClass::Other, 1};
  if (i + len > s.size()) return {CharClass::Other, 1};
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0u) != 0x80u) return {CharClass::Other, 1};
    cp = cp << 6 | (b & 0x3fu);
  }
  // Reject overlong forms, surrogates and values past U+10FFFF.
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
    return {CharClass::Other, 1};
  return {classify_code_point(cp), len};
}

}  // namespace

CharClass classify_code_point(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::Letter;
    if (cp >= '0' && cp <= '9') return CharClass::Number;
    if ((cp >= 9 && cp <= 13) || cp == ' ' || (cp >= 0x1c && cp <= 0x1f)) return CharClass::Space;
    return CharClass::Other;
  }
  const auto it = std::upper_bound(std::begin(kTable), std::end(kTable), cp,
                                   [](uint32_t c, const Range& r) { return c < r.lo; });
  if (it != std::begin(kTable) && cp <= std::prev(it)->hi) return std::prev(it)->cls;
  return CharClass::Letter;
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  const size_t n = text.size();
  // End of the run of characters of class `cls` starting at j.
  auto run_end = [&](size_t j, CharClass cls) {
    while (j < n) {
      const Char c = next_char(text, j);
      if (c.cls != cls) break;
      j += c.len;
    }
    return j;
  };
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d
    if (text[i] == '\'' && i + 1 < n) {
      const char a = text[i + 1], b = i + 2 < n ? text[i + 2] : '\0';
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      if (len) {
        pieces.push_back(text.substr(i, len));
        i += len;
        continue;
      }
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  (the optional space is only ever ' ')
    const size_t start = i;
    size_t j = i;
    if (text[j] == ' ' && j + 1 < n) ++j;
    const Char c = next_char(text, j);
    if (j < n && c.cls != CharClass::Space) {
      const size_t end = run_end(j, c.cls);
      pieces.push_back(text.substr(start, end - start));
      i = end;
      continue;
    }
    // \s+(?!\S) | \s+ : a whitespace run, leaving its last character to prefix a following word.
    const size_t end = run_end(i, CharClass::Space);
    if (end == n) {
      pieces.push_back(text.substr(i, end - i));
      i = end;
      continue;
    }
    size_t last = i, k = i;  // start of the run's last character
    while (k < end) {
      last = k;
      k += next_char(text, k).len;
    }
    const size_t take = last > i ? last : end;  // a single whitespace char before a non-space: \s+ takes it
    pieces.push_back(text.substr(i, take - i));
    i = take;
  }
  return pieces;
}

}  // namespace tensorpar::io
