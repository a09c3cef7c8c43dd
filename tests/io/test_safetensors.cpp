// Safetensors: round trips through write_safetensors and SafetensorsPlan + pwrite, block reads of
// shards (plain and transposed) against the expected elements, a file laid out byte-for-byte like the
// Python writer's, and every kind of corruption giving an IoError that names the file and the tensor.
#include "tensorpar/io/safetensors.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/temp_dir.hpp"
#include "tensorpar/core/bf16.hpp"
#include "tensorpar/core/error.hpp"
#include "test_util.hpp"

namespace tensorpar::io {
namespace {

using tensorpar::testing::random_vector;
using tensorpar::testing::read_file_bytes;
using tensorpar::testing::TempDir;

// Expected value after storing x as dtype and reading it back.
float stored(float x, StDType dtype) {
  if (dtype == StDType::BF16) return bf16_to_float(float_to_bf16(x));
  if (dtype == StDType::F16) return f16_to_float(float_to_f16(x));
  return x;
}

// A safetensors byte string from a header JSON text (padded as given) and data bytes.
std::string make_file(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json + data;
}

std::string float_bytes(std::initializer_list<float> values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

// Expect SafetensorsFile::open to throw IoError whose message contains every one of `parts`.
void expect_open_error(const std::string& path, std::initializer_list<std::string> parts) {
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << path << ": opened without error";
  } catch (const IoError& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << path << ": threw a non-IoError: " << e.what();
  }
}

struct Case {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

TEST(Safetensors, RoundTripFloatDTypesAndRanks) {
  TempDir dir;
  std::vector<Case> cases = {
      {"h.0.attn.c_attn.weight", StDType::F32, {2, 3, 4}, random_vector(24, 1)},
      {"ln_f.bias", StDType::F16, {5}, random_vector(5, 2, 3.0f)},
      {"wte.weight", StDType::BF16, {3, 4}, random_vector(12, 3, 10.0f)},
      {"scalar", StDType::F32, {}, {42.5f}},
      {"empty", StDType::F32, {0, 7}, {}},
  };
  std::vector<std::vector<std::byte>> bytes;
  std::vector<StTensorData> tensors;
  for (const auto& c : cases) bytes.push_back(encode_floats(c.values, c.dtype));
  for (size_t i = 0; i < cases.size(); ++i) tensors.push_back({cases[i].name, cases[i].dtype, cases[i].shape, bytes[i]});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "17"}};
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, tensors, meta);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));

  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"empty", "h.0.attn.c_attn.weight", "ln_f.bias", "scalar", "wte.weight"}));
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(f.contains(c.name));
    const auto& info = f.info(c.name);
    EXPECT_EQ(info.name, c.name);
    EXPECT_EQ(info.dtype, c.dtype);
    EXPECT_EQ(info.shape, c.shape);
    EXPECT_EQ(info.end - info.begin, c.values.size() * st_dtype_size(c.dtype));
    const auto enc = encode_floats(c.values, c.dtype);
    if (!enc.empty()) {
      EXPECT_EQ(std::memcmp(f.data(c.name), enc.data(), enc.size()), 0);
    }
    const int64_t rows = c.shape.size() >= 2 ? c.shape[0] : 1;
    const int64_t cols = rows == 0 ? 0 : int64_t(c.values.size()) / rows;
    std::vector<float> got(c.values.size(), -1.0f), want(c.values.size());
    for (size_t k = 0; k < want.size(); ++k) want[k] = stored(c.values[k], c.dtype);
    f.read_block(c.name, 0, rows, 0, cols, got.data(), std::max<int64_t>(cols, 1));
    EXPECT_TRUE(tensorpar::testing::all_close(got, want, 0, 0));
  }
  EXPECT_FALSE(f.contains("nope"));
}

TEST(Safetensors, ReadBlockAndTransposedSubBlocks) {
  TempDir dir;
  const std::vector<float> a = random_vector(6 * 10, 7);      // "a": F32 [6, 10]
  const std::vector<float> b = random_vector(4 * 3 * 5, 8);   // "b": BF16 [4, 3, 5] viewed as [4, 15]
  const std::vector<float> c = random_vector(9, 9);           // "c": F16 [9] viewed as [1, 9]
  const auto ab = encode_floats(a, StDType::F32), bb = encode_floats(b, StDType::BF16), cb = encode_floats(c, StDType::F16);
  write_safetensors(dir.file("m.safetensors"), {{"a", StDType::F32, {6, 10}, ab},
                                                {"b", StDType::BF16, {4, 3, 5}, bb},
                                                {"c", StDType::F16, {9}, cb}});
  const auto f = SafetensorsFile::open(dir.file("m.safetensors"));

  struct Block { std::string name; StDType dtype; const std::vector<float>* src; int64_t cols, row0, nrows, col0, ncols; };
  for (const Block& k : {Block{"a", StDType::F32, &a, 10, 1, 3, 3, 5}, Block{"a", StDType::F32, &a, 10, 0, 6, 0, 10},
                         Block{"a", StDType::F32, &a, 10, 5, 1, 9, 1}, Block{"b", StDType::BF16, &b, 15, 2, 2, 4, 9},
                         Block{"c", StDType::F16, &c, 9, 0, 1, 2, 6}}) {
    SCOPED_TRACE(fmt::format("{} rows [{}, +{}) cols [{}, +{})", k.name, k.row0, k.nrows, k.col0, k.ncols));
    const float sentinel = -12345.0f;
    // Plain: dst(i, j), stride ncols + 3 so the padding must stay untouched.
    const int64_t ld = k.ncols + 3;
    std::vector<float> dst(size_t(k.nrows * ld), sentinel);
    f.read_block(k.name, k.row0, k.nrows, k.col0, k.ncols, dst.data(), ld);
    for (int64_t i = 0; i < k.nrows; ++i)
      for (int64_t j = 0; j < ld; ++j) {
        const float want = j < k.ncols ? stored((*k.src)[size_t((k.row0 + i) * k.cols + k.col0 + j)], k.dtype) : sentinel;
        ASSERT_EQ(dst[size_t(i * ld + j)], want) << "plain at (" << i << ", " << j << ")";
      }
    // Transposed: dst(j, i), stride nrows + 2.
    const int64_t ldt = k.nrows + 2;
    std::vector<float> dstt(size_t(k.ncols * ldt), sentinel);
    f.read_block_transposed(k.name, k.row0, k.nrows, k.col0, k.ncols, dstt.data(), ldt);
    for (int64_t j = 0; j < k.ncols; ++j)
      for (int64_t i = 0; i < ldt; ++i) {
        const float want = i < k.nrows ? stored((*k.src)[size_t((k.row0 + i) * k.cols + k.col0 + j)], k.dtype) : sentinel;
        ASSERT_EQ(dstt[size_t(j * ldt + i)], want) << "transposed at (" << j << ", " << i << ")";
      }
  }
  // Blocks outside the tensor and too-small strides are refused before anything is written.
  std::vector<float> dst(100);
  EXPECT_THROW(f.read_block("a", 4, 3, 0, 10, dst.data(), 10), ShapeError);
  EXPECT_THROW(f.read_block("a", 0, 1, 8, 3, dst.data(), 10), ShapeError);
  EXPECT_THROW(f.read_block("a", -1, 1, 0, 3, dst.data(), 10), ShapeError);
  EXPECT_THROW(f.read_block("a", 0, 2, 0, 5, dst.data(), 4), ShapeError);
  EXPECT_THROW(f.read_block_transposed("a", 0, 5, 0, 2, dst.data(), 4), ShapeError);
  EXPECT_THROW(f.read_block("missing", 0, 1, 0, 1, dst.data(), 1), IoError);
}

TEST(Safetensors, BlockLargerThanTransposeTile) {
  // 70 x 130 exercises the column tiling of the transposed read across tile boundaries.
  TempDir dir;
  const auto v = random_vector(70 * 130, 11);
  const auto bytes = encode_floats(v, StDType::F32);
  write_safetensors(dir.file("t.safetensors"), {{"w", StDType::F32, {70, 130}, bytes}});
  const auto f = SafetensorsFile::open(dir.file("t.safetensors"));
  std::vector<float> dst(size_t(129 * 68));
  f.read_block_transposed("w", 1, 68, 1, 129, dst.data(), 68);
  for (int64_t j = 0; j < 129; ++j)
    for (int64_t i = 0; i < 68; ++i) ASSERT_EQ(dst[size_t(j * 68 + i)], v[size_t((1 + i) * 130 + 1 + j)]) << j << "," << i;
}

TEST(Safetensors, IntegerTensorsRoundTripButAreNotReadAsFloat) {
  TempDir dir;
  const std::vector<int64_t> ids = {1, -2, 3};
  write_safetensors(dir.file("i.safetensors"),
                    {{"ids", StDType::I64, {3}, std::as_bytes(std::span(ids))}});
  const auto f = SafetensorsFile::open(dir.file("i.safetensors"));
  std::vector<int64_t> back(3);
  std::memcpy(back.data(), f.data("ids"), 24);
  EXPECT_EQ(back, ids);
  float dst[3];
  EXPECT_THROW(f.read_block("ids", 0, 1, 0, 3, dst, 3), IoError);
  EXPECT_THROW(encode_floats(std::vector<float>{1.0f}, StDType::I32), ConfigError);
}

TEST(Safetensors, PlanPlusPwriteEqualsWriteSafetensors) {
  TempDir dir;
  const auto w = random_vector(8 * 6, 21), bias = random_vector(6, 22), emb = random_vector(10 * 4, 23);
  const auto wb = encode_floats(w, StDType::BF16), bb = encode_floats(bias, StDType::F32), eb = encode_floats(emb, StDType::F16);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  write_safetensors(dir.file("ref.safetensors"), {{"w", StDType::BF16, {8, 6}, wb},
                                                  {"bias", StDType::F32, {6}, bb},
                                                  {"emb", StDType::F16, {10, 4}, eb}},
                    meta);

  const SafetensorsPlan plan({{"w", StDType::BF16, {8, 6}}, {"bias", StDType::F32, {6}}, {"emb", StDType::F16, {10, 4}}}, meta);
  EXPECT_EQ(plan.header().size() % 8, 0u);
  EXPECT_EQ(plan.offset("w"), plan.header().size());
  EXPECT_EQ(plan.offset("bias"), plan.header().size() + wb.size());
  EXPECT_EQ(plan.file_size(), plan.header().size() + wb.size() + bb.size() + eb.size());
  EXPECT_EQ(plan.entry("emb").shape, (std::vector<int64_t>{10, 4}));
  EXPECT_THROW(plan.offset("nope"), ConfigError);

  // As ranks would: each writes its own row slices, in any order; one writes the header.
  const std::string path = dir.file("planned.safetensors");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  auto pw = [&](const std::vector<std::byte>& bytes, size_t from, size_t n, uint64_t at) {
    ASSERT_EQ(::pwrite(fd, bytes.data() + from, n, off_t(at + from)), ssize_t(n));
  };
  pw(eb, eb.size() / 2, eb.size() - eb.size() / 2, plan.offset("emb"));  // "rank 1" half of emb
  pw(wb, 0, wb.size(), plan.offset("w"));
  pw(eb, 0, eb.size() / 2, plan.offset("emb"));                           // "rank 0" half of emb
  pw(bb, 0, bb.size(), plan.offset("bias"));
  ASSERT_EQ(::pwrite(fd, plan.header().data(), plan.header().size(), 0), ssize_t(plan.header().size()));
  ::close(fd);

  const std::string ref = read_file_bytes(dir.file("ref.safetensors")), planned = read_file_bytes(path);
  EXPECT_EQ(planned.size(), plan.file_size());
  EXPECT_EQ(planned, ref);
  // The JSON part parses and lists the metadata first, then the tensors in layout order.
  const uint64_t n = plan.header().size() - 8;
  const auto j = nlohmann::ordered_json::parse(plan.header().substr(8, n));
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "w", "bias", "emb"}));
}

TEST(Safetensors, PlanRejectsBadEntries) {
  EXPECT_THROW(SafetensorsPlan({{"a", StDType::F32, {2}}, {"a", StDType::F32, {3}}}), ConfigError);
  EXPECT_THROW(SafetensorsPlan({{"a", StDType::F32, {-2}}}), ConfigError);
  EXPECT_THROW(SafetensorsPlan({{"__metadata__", StDType::F32, {1}}}), ConfigError);
  EXPECT_THROW(SafetensorsPlan({{"a", StDType::F64, {int64_t(1) << 40, int64_t(1) << 30}}}), ConfigError);
  TempDir dir;
  const std::vector<std::byte> three(3);
  EXPECT_THROW(write_safetensors(dir.file("x.safetensors"), {{"a", StDType::F32, {1}, three}}), ConfigError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors")));
}

// What safetensors.torch.save_file({"weight": torch.tensor([[1., 2.], [3., 4.]]), "bias": torch.tensor([0.5], dtype=torch.bfloat16)},
// metadata={"format": "pt"}) lays out: compact JSON with tensors sorted by dtype alignment then name,
// padded with spaces to a multiple of 8, offsets relative to the data start.
TEST(Safetensors, ParsesPythonWriterLayout) {
  TempDir dir;
  std::string json =
      R"({"__metadata__":{"format":"pt"},"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("bias":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]}})";
  json.append((8 - json.size() % 8) % 8, ' ');
  ASSERT_EQ((8 + json.size()) % 8, 0u);
  std::string data = float_bytes({1, 2, 3, 4});
  data += std::string("\x00\x3f", 2);  // bf16 0.5 = 0x3f00, little-endian
  const std::string path = dir.write("model.safetensors", make_file(json, data));
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"bias", "weight"}));
  float w[4], b[1];
  f.read_block("weight", 0, 2, 0, 2, w, 2);
  EXPECT_EQ(std::vector<float>(w, w + 4), (std::vector<float>{1, 2, 3, 4}));
  f.read_block_transposed("weight", 0, 2, 0, 2, w, 2);
  EXPECT_EQ(std::vector<float>(w, w + 4), (std::vector<float>{1, 3, 2, 4}));
  f.read_block("bias", 0, 1, 0, 1, b, 1);
  EXPECT_EQ(b[0], 0.5f);
}

TEST(Safetensors, CorruptFilesGiveIoErrorNamingFileAndKey) {
  TempDir dir;
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight = float_bytes({1, 2});

  expect_open_error(dir.write("empty.safetensors", ""), {"empty.safetensors", "empty"});
  expect_open_error(dir.write("short.safetensors", "abcde"), {"short.safetensors", "5 bytes"});
  {
    std::string f = make_file("{}", "");
    const uint64_t n = 1000;
    std::memcpy(f.data(), &n, 8);
    expect_open_error(dir.write("pastend.safetensors", f), {"pastend.safetensors", "header length 1000"});
    const uint64_t huge = ~uint64_t(0);
    std::memcpy(f.data(), &huge, 8);
    expect_open_error(dir.write("huge.safetensors", f), {"huge.safetensors", "header length"});
  }
  expect_open_error(dir.write("badjson.safetensors", make_file(R"({"w": {"dtype": )", "")),
                    {"badjson.safetensors", "not valid JSON"});
  expect_open_error(dir.write("twice.safetensors", make_file("{" + ok_entry + "," + ok_entry + "}", eight)),
                    {"twice.safetensors", "key 'w' appears twice"});
  expect_open_error(dir.write("array.safetensors", make_file("[1, 2]", "")), {"array.safetensors", "not an object"});
  expect_open_error(dir.write("dtype.safetensors",
                              make_file(R"({"h.0.w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", "ab")),
                    {"dtype.safetensors", "'h.0.w'", "unknown dtype 'F8'"});
  expect_open_error(dir.write("size.safetensors",
                              make_file(R"({"h.0.attn.c_attn.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})",
                                        std::string(16, 'x'))),
                    {"size.safetensors", "'h.0.attn.c_attn.weight'", "[0, 12)", "needs 16 bytes"});
  expect_open_error(dir.write("reversed.safetensors",
                              make_file(R"({"b":{"dtype":"U8","shape":[0],"data_offsets":[100,90]}})", std::string(128, 'x'))),
                    {"reversed.safetensors", "'b'", "[100, 90)"});
  expect_open_error(dir.write("overlap.safetensors",
                              make_file("{" + ok_entry + R"(,"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                        std::string(16, 'x'))),
                    {"overlap.safetensors", "'v'", "'w'", "overlaps"});
  expect_open_error(dir.write("range.safetensors",
                              make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", eight)),
                    {"range.safetensors", "'w'", "past the end"});
  expect_open_error(dir.write("negshape.safetensors",
                              make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight)),
                    {"negshape.safetensors", "'w'", "shape"});
  expect_open_error(dir.write("floatshape.safetensors",
                              make_file(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight)),
                    {"floatshape.safetensors", "'w'", "shape"});
  expect_open_error(dir.write("overflow.safetensors",
                              make_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight)),
                    {"overflow.safetensors", "'w'", "overflows"});
  expect_open_error(dir.write("nooffsets.safetensors", make_file(R"({"w":{"dtype":"F32","shape":[2]}})", eight)),
                    {"nooffsets.safetensors", "'w'", "data_offsets"});
  expect_open_error(dir.write("meta.safetensors", make_file(R"({"__metadata__":{"step":3}})", "")),
                    {"meta.safetensors", "'step'"});

  // A good file with its data truncated.
  const auto v = random_vector(16, 5);
  write_safetensors(dir.file("good.safetensors"), {{"a", StDType::F32, {4}, encode_floats(std::span(v).first(4), StDType::F32)},
                                                   {"z.last", StDType::F32, {12}, encode_floats(std::span(v).last(12), StDType::F32)}});
  const std::string good = read_file_bytes(dir.file("good.safetensors"));
  expect_open_error(dir.write("truncated.safetensors", good.substr(0, good.size() - 4)),
                    {"truncated.safetensors", "'z.last'", "truncated"});

  // Bytes that belong to no tensor (Hugging Face's reader refuses them too): one extra byte at the end,
  // a hole between two tensors, and a good file whose data is shifted by one inserted byte.
  expect_open_error(dir.write("oversized.safetensors", make_file("{" + ok_entry + "}", eight + "x")),
                    {"oversized.safetensors", "data section is 9 bytes", "cover 8", "1 bytes belong to no tensor"});
  expect_open_error(dir.write("hole.safetensors",
                              make_file("{" + ok_entry + R"(,"v":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                        std::string(20, 'x'))),
                    {"hole.safetensors", "bytes [8, 12) before tensor 'v' belong to no tensor"});
  expect_open_error(dir.write("start.safetensors",
                              make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, 'x'))),
                    {"start.safetensors", "bytes [0, 4) before tensor 'w'"});
  {
    const uint64_t n = [&] {
      uint64_t len;
      std::memcpy(&len, good.data(), 8);
      return len;
    }();
    std::string shifted = good;
    shifted.insert(size_t(8 + n), 1, '\0');
    expect_open_error(dir.write("shifted.safetensors", shifted), {"shifted.safetensors", "1 bytes belong to no tensor"});
  }

  // Missing key on a good file.
  const auto f = SafetensorsFile::open(dir.file("good.safetensors"));
  try {
    f.info("h.7.mlp.c_fc.weight");
    ADD_FAILURE() << "missing tensor did not throw";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("good.safetensors: missing tensor 'h.7.mlp.c_fc.weight'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f.data("nope"), IoError);
  expect_open_error(dir.file("does_not_exist.safetensors"), {"does_not_exist.safetensors", "cannot open"});
}

// Every truncation and many random byte flips of a valid file: open must either succeed (and then all
// tensors are readable inside the file) or throw IoError; never crash or throw anything else.
TEST(Safetensors, FuzzedFilesNeverCrash) {
  TempDir dir;
  const auto v = random_vector(20, 31);
  const auto a = encode_floats(std::span(v).first(8), StDType::F32), b = encode_floats(std::span(v).last(12), StDType::BF16);
  write_safetensors(dir.file("seed.safetensors"), {{"a", StDType::F32, {2, 4}, a}, {"b", StDType::BF16, {3, 4}, b}},
                    {{"format", "pt"}});
  const std::string seed = read_file_bytes(dir.file("seed.safetensors"));
  auto try_open = [&](const std::string& bytes) {
    const std::string path = dir.write("fuzz.safetensors", bytes);
    try {
      const auto f = SafetensorsFile::open(path);
      for (const auto& name : f.names()) {
        const auto& t = f.info(name);
        ASSERT_LE(t.end, bytes.size());
        if (t.dtype == StDType::F32 || t.dtype == StDType::F16 || t.dtype == StDType::BF16) {
          const int64_t rows = t.shape.size() >= 2 ? t.shape[0] : 1;
          const int64_t cols = rows == 0 ? 0 : int64_t((t.end - t.begin) / st_dtype_size(t.dtype)) / rows;
          std::vector<float> dst(size_t(rows * cols) + 1);
          f.read_block(name, 0, rows, 0, cols, dst.data(), std::max<int64_t>(cols, 1));
        }
      }
    } catch (const IoError&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "non-IoError: " << e.what();
    }
  };
  for (size_t len = 0; len < seed.size(); ++len) try_open(seed.substr(0, len));
  uint64_t s = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes = seed;
    for (int k = 0; k < 3; ++k) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const size_t pos = size_t(s >> 33) % std::min<size_t>(bytes.size(), 200);  // mostly the header
      bytes[pos] = char(s >> 20);
    }
    try_open(bytes);
  }
}

}  // namespace
}  // namespace tensorpar::io
