#include "tensorpar/comm/process_group.hpp"

#include <cstdint>
#include <exception>

#include <type_traits>

#include "tensorpar/comm/watchdog.hpp"
#include "tensorpar/core/profile.hpp"

namespace tensorpar {

namespace {

double now() { return MPI_Wtime(); }

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, int32_t>) return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, int64_t>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, uint8_t>) return MPI_UINT8_T;
  else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
  else static_assert(sizeof(T) == 0, "unsupported element type");
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

// MPI counts are int: refuse anything larger rather than silently truncating.
int mpi_count(size_t n, const char* what) {
  TP_CHECK(n <= size_t(INT32_MAX), CommError, "{} of {} elements exceeds MPI's int count limit", what, n);
  return int(n);
}

}  // namespace

void throw_mpi_error(int rc, const char* what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw CommError(fmt::format("MPI {} failed: {}", what, std::string(text, size_t(len))));
}

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::AllReduce: return "all_reduce";
    case Collective::AllGather: return "all_gather";
    case Collective::ReduceScatter: return "reduce_scatter";
    case Collective::Broadcast: return "broadcast";
    case Collective::Barrier: return "barrier";
    case Collective::Send: return "send";
    case Collective::Recv: return "recv";
    default: return "?";
  }
}

const char* comm_dtype_name(CommDtype d) {
  switch (d) {
    case CommDtype::F32: return "f32";
    case CommDtype::BF16: return "bf16";
    case CommDtype::Int8: return "int8";
  }
  return "?";
}

// ---- Work ----

Work::Work(ProcessGroup* group, MPI_Request request, Collective what)
    : group_(group), request_(request), what_(what) {}

Work::Work(ProcessGroup* group, MPI_Request request, Collective what, std::vector<int> displacements)
    : group_(group), request_(request), what_(what), displacements_(std::move(displacements)) {}

Work::Work(ProcessGroup* group, std::span<float> deferred_all_reduce)
    : group_(group), deferred_(deferred_all_reduce) {}

Work::Work(Work&& other) noexcept
    : group_(other.group_),
      request_(other.request_),
      deferred_(other.deferred_),
      what_(other.what_),
      displacements_(std::move(other.displacements_)) {
  other.request_ = MPI_REQUEST_NULL;
  other.deferred_ = {};
}

Work& Work::operator=(Work&& other) noexcept {
  if (this != &other) {
    if (pending()) {
      try { wait(); } catch (...) {}
    }
    group_ = other.group_;
    request_ = other.request_;
    deferred_ = other.deferred_;
    what_ = other.what_;
    displacements_ = std::move(other.displacements_);
    other.request_ = MPI_REQUEST_NULL;
    other.deferred_ = {};
  }
  return *this;
}

Work::~Work() {
  // A deferred all-reduce has not communicated yet: while an exception unwinds on this rank alone,
  // starting it would meet peers that are elsewhere, so it is dropped (main's agreement then ends
  // the job). A started non-blocking one must always complete.
  if (deferred_.data() != nullptr && std::uncaught_exceptions() > 0) return;
  if (pending()) {
    try { wait(); } catch (...) {}
  }
}

void Work::wait() {
  if (!pending()) return;
  if (deferred_.data() != nullptr) {
    const double t0 = now();
    const std::span<float> data = deferred_;
    deferred_ = {};
    detail::InCollective in_flight("all_reduce", *group_);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), int(data.size()), MPI_FLOAT, MPI_SUM, group_->comm_),
              "all_reduce (deferred)");
    group_->stats_.seconds += now() - t0;
    if (profiling_enabled()) add_to_profile("all_reduce wait (deferred)", now() - t0);
    return;
  }
  const double t0 = now();
  int rc = MPI_SUCCESS;
  if (group_) {
    detail::InCollective in_flight(collective_name(what_), *group_);
    rc = MPI_Wait(&request_, MPI_STATUS_IGNORE);
  } else {
    rc = MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  request_ = MPI_REQUEST_NULL;
  displacements_.clear();
  if (group_) group_->stats_.seconds += now() - t0;
  if (profiling_enabled())
    add_to_profile(what_ == Collective::Send     ? "send wait"
                   : what_ == Collective::Recv   ? "recv wait"
                   : what_ == Collective::AllReduce ? "all_reduce wait (async)"
                                                 : "uneven collective wait (async)",
                   now() - t0);
  if (rc != MPI_SUCCESS) throw_mpi_error(rc, collective_name(what_));
}

// ---- ProcessGroup ----

ProcessGroup::ProcessGroup(MPI_Comm comm, const char* name) : name_(name) {
  static const bool hooks_armed = (detail::arm_test_hooks(), true);
  (void)hooks_armed;
  MPI_CHECK(MPI_Comm_dup(comm, &comm_), "Comm_dup");
  // Errors come back as return codes (turned into exceptions), never abort inside MPI.
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "Comm_set_errhandler");
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_), "Comm_rank");
  MPI_CHECK(MPI_Comm_size(comm_, &size_), "Comm_size");
}

ProcessGroup ProcessGroup::split(int color, int key, const char* name) const {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, color, key, &comm), "Comm_split");
  ProcessGroup group(comm, name);  // duplicates, so free ours even if that throws
  MPI_Comm_free(&comm);
  return group;
}

ProcessGroup::ProcessGroup(ProcessGroup&& other) noexcept
    : comm_(other.comm_),
      name_(other.name_),
      rank_(other.rank_),
      size_(other.size_),
      stats_(other.stats_),
      async_mode_(other.async_mode_),
      comm_dtype_(other.comm_dtype_) {
  other.comm_ = MPI_COMM_NULL;
}

ProcessGroup::~ProcessGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void ProcessGroup::record(Collective c, int64_t bytes, double seconds) {
  if (profiling_enabled()) add_to_profile(collective_name(c), seconds);
  stats_.calls[size_t(c)] += 1;
  stats_.bytes[size_t(c)] += bytes;
  stats_.seconds += seconds;
}

template <class T>
void ProcessGroup::all_reduce(std::span<T> data, AllReduceOptions options) {
  const double t0 = now();
  if (size_ > 1 && !data.empty()) {
    detail::InCollective in_flight("all_reduce", *this);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), mpi_count(data.size(), "all_reduce"), mpi_type<T>(),
                            mpi_op(options.op), comm_),
              "all_reduce");
  }
  record(Collective::AllReduce, int64_t(data.size_bytes()), now() - t0);
}

Work ProcessGroup::all_reduce_async(std::span<float> data, AllReduceOptions options) {
  const double t0 = now();
  record(Collective::AllReduce, int64_t(data.size_bytes()), 0);
  if (size_ == 1 || data.empty()) return {};
  if (async_mode_ == AsyncMode::Deferred && options.op == ReduceOp::Sum) {
    mpi_count(data.size(), "all_reduce");
    return Work(this, data);
  }
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data.data(), mpi_count(data.size(), "all_reduce"), MPI_FLOAT,
                           mpi_op(options.op), comm_, &request),
            "all_reduce (non-blocking)");
  stats_.seconds += now() - t0;
  return Work(this, request, Collective::AllReduce);
}

template <class T>
void ProcessGroup::all_gather(std::span<T> out, std::span<const T> in) {
  TP_CHECK(out.size() == in.size() * size_t(size_), CommError,
           "all_gather: output has {} elements but {} ranks x {} input elements were expected", out.size(), size_,
           in.size());
  const double t0 = now();
  detail::InCollective in_flight("all_gather", *this);
  MPI_CHECK(MPI_Allgather(in.data(), mpi_count(in.size(), "all_gather"), mpi_type<T>(), out.data(),
                          mpi_count(in.size(), "all_gather"), mpi_type<T>(), comm_),
            "all_gather");
  record(Collective::AllGather, int64_t(out.size_bytes()), now() - t0);
}

void ProcessGroup::reduce_scatter(std::span<float> out, std::span<const float> in) {
  TP_CHECK(in.size() == out.size() * size_t(size_), CommError,
           "reduce_scatter: input has {} elements but {} ranks x {} output elements were expected", in.size(),
           size_, out.size());
  const double t0 = now();
  detail::InCollective in_flight("reduce_scatter", *this);
  MPI_CHECK(MPI_Reduce_scatter_block(in.data(), out.data(), mpi_count(out.size(), "reduce_scatter"), MPI_FLOAT,
                                     MPI_SUM, comm_),
            "reduce_scatter");
  record(Collective::ReduceScatter, int64_t(in.size_bytes()), now() - t0);
}

namespace {

// MPI's per-rank counts of an uneven collective over `data` (checked to add up to its size) and the
// pieces' offsets.
std::vector<int> uneven_displacements(std::span<const int> counts, size_t size, int ranks, const char* what) {
  TP_CHECK(counts.size() == size_t(ranks), CommError, "{}: {} counts for {} ranks", what, counts.size(), ranks);
  std::vector<int> displacements(counts.size());
  int64_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    TP_CHECK(counts[r] >= 0, CommError, "{}: negative count {} for rank {}", what, counts[r], r);
    displacements[r] = mpi_count(size_t(total), what);
    total += counts[r];
  }
  TP_CHECK(total == int64_t(size), CommError, "{}: counts add up to {} elements but the buffer has {}", what, total,
           size);
  return displacements;
}

}  // namespace

void ProcessGroup::reduce_scatter_in_place(std::span<float> data, std::span<const int> counts) {
  uneven_displacements(counts, data.size(), size_, "reduce_scatter");
  const double t0 = now();
  if (size_ > 1) {
    detail::InCollective in_flight("reduce_scatter", *this);
    MPI_CHECK(MPI_Reduce_scatter(MPI_IN_PLACE, data.data(), counts.data(), MPI_FLOAT, MPI_SUM, comm_),
              "reduce_scatter");
  }
  record(Collective::ReduceScatter, int64_t(data.size_bytes()), now() - t0);
}

Work ProcessGroup::reduce_scatter_in_place_async(std::span<float> data, std::span<const int> counts) {
  uneven_displacements(counts, data.size(), size_, "reduce_scatter");
  const double t0 = now();
  record(Collective::ReduceScatter, int64_t(data.size_bytes()), 0);
  if (size_ == 1) return {};
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Ireduce_scatter(MPI_IN_PLACE, data.data(), counts.data(), MPI_FLOAT, MPI_SUM, comm_, &request),
            "reduce_scatter (non-blocking)");
  stats_.seconds += now() - t0;
  return Work(this, request, Collective::ReduceScatter);
}

void ProcessGroup::all_gather_in_place(std::span<float> data, std::span<const int> counts) {
  const std::vector<int> displacements = uneven_displacements(counts, data.size(), size_, "all_gather");
  const double t0 = now();
  if (size_ > 1) {
    detail::InCollective in_flight("all_gather", *this);
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data(), counts.data(), displacements.data(),
                             MPI_FLOAT, comm_),
              "all_gather");
  }
  record(Collective::AllGather, int64_t(data.size_bytes()), now() - t0);
}

Work ProcessGroup::all_gather_in_place_async(std::span<float> data, std::span<const int> counts) {
  std::vector<int> displacements = uneven_displacements(counts, data.size(), size_, "all_gather");
  const double t0 = now();
  record(Collective::AllGather, int64_t(data.size_bytes()), 0);
  if (size_ == 1) return {};
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data(), counts.data(), displacements.data(),
                            MPI_FLOAT, comm_, &request),
            "all_gather (non-blocking)");
  stats_.seconds += now() - t0;
  return Work(this, request, Collective::AllGather, std::move(displacements));
}

template <class T>
void ProcessGroup::broadcast(std::span<T> data, int root) {
  const double t0 = now();
  if (size_ > 1 && !data.empty()) {
    detail::InCollective in_flight("broadcast", *this);
    MPI_CHECK(MPI_Bcast(data.data(), mpi_count(data.size(), "broadcast"), mpi_type<T>(), root, comm_),
              "broadcast");
  }
  record(Collective::Broadcast, int64_t(data.size_bytes()), now() - t0);
}

void ProcessGroup::broadcast_string(std::string& s, int root) {
  int64_t n = int64_t(s.size());
  broadcast(std::span<int64_t>(&n, 1), root);
  s.resize(size_t(n));
  broadcast(std::span<char>(s.data(), s.size()), root);
}

void ProcessGroup::barrier() {
  const double t0 = now();
  detail::InCollective in_flight("barrier", *this);
  MPI_CHECK(MPI_Barrier(comm_), "barrier");
  record(Collective::Barrier, 0, now() - t0);
}

Work ProcessGroup::send(std::span<const float> data, int dst, int tag) {
  TP_CHECK(dst >= 0 && dst < size_ && dst != rank_, CommError, "send to rank {} of the {} group of {} ranks (this is {})",
           dst, name_, size_, rank_);
  const double t0 = now();
  MPI_Request request = MPI_REQUEST_NULL;
  // MPI_Isend takes a non-const pointer only for old bindings' sake; it never writes
  MPI_CHECK(MPI_Isend(const_cast<float*>(data.data()), mpi_count(data.size(), "send"), MPI_FLOAT, dst, tag, comm_,
                      &request),
            "send");
  record(Collective::Send, int64_t(data.size_bytes()), now() - t0);
  return Work(this, request, Collective::Send);
}

Work ProcessGroup::recv(std::span<float> data, int src, int tag) {
  TP_CHECK(src >= 0 && src < size_ && src != rank_, CommError,
           "receive from rank {} of the {} group of {} ranks (this is {})", src, name_, size_, rank_);
  const double t0 = now();
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Irecv(data.data(), mpi_count(data.size(), "recv"), MPI_FLOAT, src, tag, comm_, &request), "recv");
  record(Collective::Recv, int64_t(data.size_bytes()), now() - t0);
  return Work(this, request, Collective::Recv);
}

std::string ProcessGroup::first_error(const std::string& local_error) {
  if (size_ == 1) return local_error;
  // Not counted in stats: agreement is bookkeeping, not model communication.
  int32_t first = local_error.empty() ? size_ : rank_;
  detail::InCollective in_flight("error agreement", *this);
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT32_T, MPI_MIN, comm_), "all_reduce (error agreement)");
  if (first == size_) return {};
  std::string message = local_error;
  int64_t n = int64_t(message.size());
  MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT64_T, first, comm_), "broadcast (error agreement)");
  message.resize(size_t(n));
  MPI_CHECK(MPI_Bcast(message.data(), int(n), MPI_CHAR, first, comm_), "broadcast (error agreement)");
  return message;
}

template void ProcessGroup::all_reduce<float>(std::span<float>, AllReduceOptions);
template void ProcessGroup::all_reduce<double>(std::span<double>, AllReduceOptions);
template void ProcessGroup::all_reduce<int32_t>(std::span<int32_t>, AllReduceOptions);
template void ProcessGroup::all_reduce<int64_t>(std::span<int64_t>, AllReduceOptions);
template void ProcessGroup::all_gather<float>(std::span<float>, std::span<const float>);
template void ProcessGroup::all_gather<int32_t>(std::span<int32_t>, std::span<const int32_t>);
template void ProcessGroup::all_gather<int64_t>(std::span<int64_t>, std::span<const int64_t>);
template void ProcessGroup::broadcast<float>(std::span<float>, int);
template void ProcessGroup::broadcast<double>(std::span<double>, int);
template void ProcessGroup::broadcast<int32_t>(std::span<int32_t>, int);
template void ProcessGroup::broadcast<int64_t>(std::span<int64_t>, int);
template void ProcessGroup::broadcast<uint8_t>(std::span<uint8_t>, int);
template void ProcessGroup::broadcast<char>(std::span<char>, int);

}  // namespace tensorpar
