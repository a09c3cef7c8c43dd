// Tensor: a shape, a dtype and a 64-byte aligned owning buffer, allocated once and zero-filled;
// or, made by view(), a tensor borrowing another's buffer (layers sharing one activation set).
// MatrixView: a cheap non-owning row-major view (rows, cols, leading dimension) of a block of one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar {

enum class DType : uint8_t { F32, BF16 };
inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::F32 ? "F32" : "BF16"; }

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);

// Non-owning row-major view of a matrix block: element (i, j) is data[i * ld + j].
template <class T>
struct MatrixViewT {
  T* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;

  T& operator()(int64_t i, int64_t j) const { return data[i * ld + j]; }
  MatrixViewT row_block(int64_t first_row, int64_t num_rows) const {
    return {data + first_row * ld, num_rows, cols, ld};
  }
  MatrixViewT col_block(int64_t first_col, int64_t num_cols) const {
    return {data + first_col, rows, num_cols, ld};
  }
  bool contiguous() const { return ld == cols; }
};
using MatrixView = MatrixViewT<float>;
using ConstMatrixView = MatrixViewT<const float>;

namespace detail {
// Frees a Tensor's buffer, unless the tensor is a view of another's.
struct FreeDeleter {
  bool owns = true;
  size_t bytes = 0;  // allocated, for Tensor::live_bytes()
  void operator()(void* p) const noexcept;
};
}  // namespace detail

class Tensor {
 public:
  static constexpr size_t kAlignment = 64;

  Tensor() = default;
  explicit Tensor(Shape shape, DType dtype = DType::F32);
  Tensor(std::initializer_list<int64_t> shape, DType dtype = DType::F32) : Tensor(Shape(shape), dtype) {}
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;  // copies are explicit: clone()
  Tensor& operator=(const Tensor&) = delete;
  Tensor clone() const;
  // The same buffer, shape and dtype, not owned: several layers keep an activation in one buffer
  // owned elsewhere (activation recomputation). It must not outlive this tensor.
  Tensor view() const;
  // A non-owning tensor of `shape` over this one's elements [offset, offset + numel(shape)): the
  // parameter gradients viewing one contiguous arena. It must not outlive this tensor.
  Tensor view_range(int64_t offset, Shape shape) const;
  bool owns_data() const { return data_.get_deleter().owns; }

  // Memory accounting: bytes of all Tensor buffers alive in this process (views not counted), and
  // the most alive at once since the last reset_peak_bytes(). Tests use it to check what a model
  // allocates (an inference model: no gradients, no backward buffers) without timing or RSS.
  static int64_t live_bytes();
  static int64_t peak_bytes();
  static void reset_peak_bytes();

  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t ndim() const { return shape_.size(); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }
  bool empty() const { return numel_ == 0; }

  float* f32();
  const float* f32() const;
  bf16* bf16_data();
  const bf16* bf16_data() const;
  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }

  std::span<float> span() { return {f32(), size_t(numel_)}; }
  std::span<const float> span() const { return {f32(), size_t(numel_)}; }
  // The tensor as a matrix [numel / last_dim, last_dim].
  MatrixView matrix();
  ConstMatrixView matrix() const;

  void zero();

 private:
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
  std::unique_ptr<std::byte, detail::FreeDeleter> data_;
};

}  // namespace tensorpar
