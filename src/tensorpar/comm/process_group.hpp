// ProcessGroup: the collectives of one MPI communicator, taking spans and returning when done or a
// Work handle. Contract (as in c10d): every rank of the group calls the same collectives in the same
// order with the same sizes. Every MPI failure becomes a CommError naming the collective.
#pragma once
#include <mpi.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

// MPI_CHECK(call, "what"): throw CommError with MPI's own error string if the call fails.
#define MPI_CHECK(call, what)                                                                   \
  do {                                                                                          \
    const int tp_mpi_rc_ = (call);                                                              \
    if (tp_mpi_rc_ != MPI_SUCCESS) [[unlikely]] ::tensorpar::throw_mpi_error(tp_mpi_rc_, what); \
  } while (0)
[[noreturn]] void throw_mpi_error(int rc, const char* what);

// Send and Recv are the point-to-point messages of pipeline parallelism (not collectives, counted alike).
enum class Collective : int { AllReduce, AllGather, ReduceScatter, Broadcast, Barrier, Send, Recv, kCount };
const char* collective_name(Collective c);

// What the group has done: call counts and payload bytes per collective, and the wall time spent
// blocked in communication (inside blocking calls and Work::wait).
struct CommStats {
  std::array<int64_t, size_t(Collective::kCount)> calls{};
  std::array<int64_t, size_t(Collective::kCount)> bytes{};
  double seconds = 0;
  int64_t count(Collective c) const { return calls[size_t(c)]; }
};

enum class ReduceOp { Sum, Max, Min };

// Wire format of the compressible tensor-parallel traffic (activations and activation gradients,
// comm/compressed_collectives.hpp). The sums are always accumulated in f32.
enum class CommDtype { F32, BF16, Int8 };
const char* comm_dtype_name(CommDtype d);
struct AllReduceOptions {
  ReduceOp op = ReduceOp::Sum;
};

class ProcessGroup;

// How all_reduce_async runs. Nonblocking: MPI_Iallreduce, completed in wait() (overlaps with
// compute only where the MPI library progresses in the background, e.g. with offloading NICs).
// Deferred: nothing happens until wait(), which runs the blocking MPI_Allreduce; on shared-memory
// nodes without a spare core this is faster (Open MPI's blocking algorithms move about twice the
// bytes per second of its non-blocking ones, bench/README.md) and keeps the same call sites.
enum class AsyncMode { Nonblocking, Deferred };

// Handle of a non-blocking collective. wait() blocks until it completes and throws if it failed.
// Move-only; a Work that is destroyed unwaited waits in its destructor (never leaves MPI dangling),
// except a deferred one destroyed by an exception unwinding, which never starts.
class Work {
 public:
  Work() = default;
  Work(ProcessGroup* group, MPI_Request request, Collective what);
  // The same, keeping `displacements` (an uneven collective's) alive until the request completes.
  Work(ProcessGroup* group, MPI_Request request, Collective what, std::vector<int> displacements);
  // A deferred all-reduce of `data`, run by wait().
  Work(ProcessGroup* group, std::span<float> deferred_all_reduce);
  Work(Work&& other) noexcept;
  Work& operator=(Work&& other) noexcept;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work();
  void wait();
  bool pending() const { return request_ != MPI_REQUEST_NULL || deferred_.data() != nullptr; }

 private:
  ProcessGroup* group_ = nullptr;
  MPI_Request request_ = MPI_REQUEST_NULL;
  std::span<float> deferred_;
  Collective what_ = Collective::AllReduce;
  std::vector<int> displacements_;  // read by MPI until the request completes (moves keep the buffer)
};

class ProcessGroup {
 public:
  // Duplicates `comm` (so our traffic never mixes with the caller's) and owns the duplicate. `name`
  // (a string literal: it must outlive the group) says which group this is in error messages.
  explicit ProcessGroup(MPI_Comm comm, const char* name = "process");
  ~ProcessGroup();
  ProcessGroup(ProcessGroup&&) noexcept;
  ProcessGroup& operator=(ProcessGroup&&) = delete;
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  static ProcessGroup world() { return ProcessGroup(MPI_COMM_WORLD, "world"); }
  // A group of this process alone: the serial reference in tests, and TP=1.
  static ProcessGroup self() { return ProcessGroup(MPI_COMM_SELF, "self"); }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }
  const char* name() const { return name_; }

  // Collective over this group: the ranks passing the same `color` form one new group, ordered by
  // `key` (ties by rank here). Every sub-group (tensor/data-parallel, the ranks sharing a KV head)
  // is made here, so no layer above comm/ touches MPI communicators.
  ProcessGroup split(int color, int key, const char* name) const;

  // In place: data = op over ranks of data. Supported T: float, double, int32_t, int64_t.
  template <class T>
  void all_reduce(std::span<T> data, AllReduceOptions options = {});
  Work all_reduce_async(std::span<float> data, AllReduceOptions options = {});
  // out[r * in.size() + i] = in_r[i]: rank-major concatenation.
  template <class T>
  void all_gather(std::span<T> out, std::span<const T> in);
  // out[i] = sum over ranks r of in_r[rank * out.size() + i].
  void reduce_scatter(std::span<float> out, std::span<const float> in);
  // Uneven pieces, in place (MPI_Reduce_scatter with MPI_IN_PLACE): `data` is the concatenation of
  // every rank's piece in rank order, rank r's of counts[r] elements (sum = data.size()). Afterwards
  // data[0, counts[rank()]) holds the sum over ranks of this rank's piece — at the start of `data`,
  // as MPI puts it, not at the piece's offset; the rest of `data` is undefined.
  void reduce_scatter_in_place(std::span<float> data, std::span<const int> counts);
  // The same, non-blocking (MPI_Ireduce_scatter): `data` and `counts` must stay untouched until wait().
  Work reduce_scatter_in_place_async(std::span<float> data, std::span<const int> counts);
  // Uneven all-gather in place (MPI_Allgatherv with MPI_IN_PLACE): `data` is the concatenation of
  // every rank's piece (counts[r] elements, rank order); this rank's piece is sent from its offset
  // and every other piece is received into its own.
  void all_gather_in_place(std::span<float> data, std::span<const int> counts);
  // The same, non-blocking (MPI_Iallgatherv): `data` and `counts` must stay untouched until wait().
  Work all_gather_in_place_async(std::span<float> data, std::span<const int> counts);
  template <class T>
  void broadcast(std::span<T> data, int root);
  void broadcast_string(std::string& s, int root);
  void barrier();

  // Point-to-point (pipeline stages): start sending `data` to rank `dst` of this group, or receiving
  // into `data` from rank `src`, and return at once; wait() completes it. The buffer must stay valid
  // and untouched until then. Messages between two ranks with the same tag arrive in the order sent.
  // Unlike the collectives, only the two ranks take part; a size-0 span still sends an empty message.
  Work send(std::span<const float> data, int dst, int tag = 0);
  Work recv(std::span<float> data, int src, int tag = 0);

  // Turn a failure that may have happened on some ranks only into the same exception on all of
  // them: each rank passes its own error message ("" if it succeeded); if any rank failed, every rank
  // throws ErrorType with the message of the lowest failing rank. Call it after rank-local work that
  // can fail (reading a file, parsing input) and before the next collective, so no rank is left waiting.
  template <class ErrorType = Error>
  void agree(const std::string& local_error) {
    const std::string message = first_error(local_error);
    if (!message.empty()) throw ErrorType(message);
  }

  // The wire format the activation collectives of this group use (parallel/mappings,
  // sequence_parallel). Collectives that must be exact (loss statistics, gradient norms, parameter
  // gradients) ignore it and call the f32 collectives directly.
  void set_comm_dtype(CommDtype dtype) { comm_dtype_ = dtype; }
  CommDtype comm_dtype() const { return comm_dtype_; }

  void set_async_mode(AsyncMode mode) { async_mode_ = mode; }
  AsyncMode async_mode() const { return async_mode_; }

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  // Counts one collective in stats() (and the profile); for collectives composed on top of the
  // group's communicator in comm/ (compressed_collectives.cpp).
  void record(Collective c, int64_t bytes, double seconds);

 private:
  friend class Work;
  std::string first_error(const std::string& local_error);
  MPI_Comm comm_ = MPI_COMM_NULL;
  const char* name_ = "process";
  int rank_ = 0, size_ = 1;
  CommStats stats_;
  AsyncMode async_mode_ = AsyncMode::Deferred;
  CommDtype comm_dtype_ = CommDtype::F32;
};

}  // namespace tensorpar
