#include "tensorpar/core/tensor.hpp"

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "tensorpar/core/checked_size.hpp"

namespace tensorpar {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    TP_CHECK(d >= 0, ShapeError, "negative dimension {} in shape {}", d, shape_string(shape));
    TP_CHECK(!__builtin_mul_overflow(n, d, &n), ShapeError,
             "tensor of shape {} has more elements than 64 bits count; use smaller sizes", shape_string(shape));
  }
  return n;
}

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

namespace {
std::atomic<int64_t> g_live_bytes{0}, g_peak_bytes{0};

void count_allocation(int64_t bytes) {
  const int64_t live = g_live_bytes.fetch_add(bytes) + bytes;
  int64_t peak = g_peak_bytes.load();
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live)) {
  }
}
}  // namespace

int64_t Tensor::live_bytes() { return g_live_bytes.load(); }
int64_t Tensor::peak_bytes() { return g_peak_bytes.load(); }
void Tensor::reset_peak_bytes() { g_peak_bytes.store(g_live_bytes.load()); }

void detail::FreeDeleter::operator()(void* p) const noexcept {
  if (!owns || p == nullptr) return;
  g_live_bytes.fetch_sub(int64_t(bytes));
  std::free(p);
}

Tensor::Tensor(Shape shape, DType dtype) : shape_(std::move(shape)), numel_(shape_numel(shape_)), dtype_(dtype) {
  // numel is overflow-checked; so is its byte count rounded up to the alignment
  const int64_t exact = checked_mul(numel_, int64_t(dtype_size(dtype_)), "tensor bytes");
  const size_t bytes = size_t(checked_add(exact, kAlignment - 1, "tensor bytes")) / kAlignment * kAlignment;
  if (bytes == 0) return;
  check_fits_in_memory(int64_t(bytes), fmt::format("a tensor of shape {}", shape_string(shape_)),
                       "use a smaller model, batch or sequence");
  // Buffers of 4 MB and more (weights above all) go on 2 MB transparent huge pages where the kernel
  // allows them (THP "madvise" mode): decode streams every weight once per token, and with one TLB
  // entry per 2 MB instead of per 4 KB one thread streamed 1.4-1.5x faster here (docs/inference.md).
  // The cost is the rounding of such a buffer up to a whole 2 MB.
  constexpr size_t kHugePage = size_t(2) << 20;
  const bool huge = bytes >= 2 * kHugePage;
  const size_t allocated = huge ? (bytes + kHugePage - 1) / kHugePage * kHugePage : bytes;
  void* p = std::aligned_alloc(huge ? kHugePage : kAlignment, allocated);
  if (p == nullptr) throw Error(fmt::format("out of memory allocating a tensor of {} bytes", bytes));
  if (huge) ::madvise(p, allocated, MADV_HUGEPAGE);  // advice: without THP these stay 4 KB pages
  std::memset(p, 0, bytes);
  data_ = std::unique_ptr<std::byte, detail::FreeDeleter>(static_cast<std::byte*>(p),
                                                          detail::FreeDeleter{true, allocated});
  count_allocation(int64_t(allocated));
}

Tensor Tensor::clone() const {
  Tensor t(shape_, dtype_);
  if (numel_ > 0) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::view() const {
  Tensor t;
  t.shape_ = shape_;
  t.numel_ = numel_;
  t.dtype_ = dtype_;
  t.data_ = std::unique_ptr<std::byte, detail::FreeDeleter>(data_.get(), detail::FreeDeleter{false, 0});
  return t;
}

Tensor Tensor::view_range(int64_t offset, Shape shape) const {
  const int64_t n = shape_numel(shape);
  TP_CHECK(offset >= 0 && n >= 0 && offset + n <= numel_, Error, "view of elements [{}, {}) of a tensor of {}",
           offset, offset + n, numel_);
  Tensor t;
  t.shape_ = std::move(shape);
  t.numel_ = n;
  t.dtype_ = dtype_;
  std::byte* base = data_.get() + size_t(offset) * dtype_size(dtype_);
  t.data_ = std::unique_ptr<std::byte, detail::FreeDeleter>(base, detail::FreeDeleter{false, 0});
  return t;
}

float* Tensor::f32() {
  TP_CHECK(dtype_ == DType::F32, Error, "tensor of dtype {} used as F32", dtype_name(dtype_));
  return reinterpret_cast<float*>(data_.get());
}
const float* Tensor::f32() const { return const_cast<Tensor*>(this)->f32(); }

bf16* Tensor::bf16_data() {
  TP_CHECK(dtype_ == DType::BF16, Error, "tensor of dtype {} used as BF16", dtype_name(dtype_));
  return reinterpret_cast<bf16*>(data_.get());
}
const bf16* Tensor::bf16_data() const { return const_cast<Tensor*>(this)->bf16_data(); }

MatrixView Tensor::matrix() {
  const int64_t cols = shape_.empty() ? 1 : shape_.back();
  const int64_t rows = cols == 0 ? 0 : numel_ / cols;
  return {f32(), rows, cols, cols};
}
ConstMatrixView Tensor::matrix() const {
  auto m = const_cast<Tensor*>(this)->matrix();
  return {m.data, m.rows, m.cols, m.ld};
}

void Tensor::zero() {
  if (numel_ > 0) std::memset(data_.get(), 0, nbytes());
}

}  // namespace tensorpar
