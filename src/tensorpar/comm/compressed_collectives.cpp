#include "tensorpar/comm/compressed_collectives.hpp"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "tensorpar/comm/watchdog.hpp"
#include "tensorpar/core/bf16.hpp"

namespace tensorpar {

namespace {

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

int mpi_bytes(int64_t n, const char* what) {
  TP_CHECK(n <= int64_t(INT32_MAX), CommError, "{} of {} compressed bytes exceeds MPI's int count limit", what, n);
  return int(n);
}

// Scratch reused across calls (grown, never shrunk): collectives run on the thread that calls them.
struct Scratch {
  std::vector<float> padded;
  std::vector<uint8_t> send, recv;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// One int8 block on the wire: the scale, then 32 signed values (36 bytes).
void compress_int8_block(uint8_t* wire, const float* x) {
  float amax = 0;
  bool finite = true;
  for (int64_t i = 0; i < kInt8Block; ++i) {
    amax = std::max(amax, std::fabs(x[i]));
    finite = finite && std::isfinite(x[i]);
  }
  // A non-finite value poisons its block (scale NaN), so --on-nan still sees it after the trip.
  const float d = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
  const float id = (finite && amax > 0) ? 127.0f / amax : 0.0f;
  std::memcpy(wire, &d, sizeof(float));
  int8_t* q = reinterpret_cast<int8_t*>(wire + sizeof(float));
  for (int64_t i = 0; i < kInt8Block; ++i)
    q[i] = int8_t(std::clamp(std::nearbyint(x[i] * id), -127.0f, 127.0f));
}

}  // namespace

CommDtype parse_comm_dtype(const std::string& name) {
  if (name == "f32") return CommDtype::F32;
  if (name == "bf16") return CommDtype::BF16;
  if (name == "int8") return CommDtype::Int8;
  throw ConfigError(fmt::format("--tp-comm-dtype must be f32, bf16 or int8 (got '{}')", name));
}

int64_t comm_block(CommDtype dtype) { return dtype == CommDtype::Int8 ? kInt8Block : 1; }

int64_t wire_bytes(CommDtype dtype, int64_t n) {
  switch (dtype) {
    case CommDtype::F32: return n * 4;
    case CommDtype::BF16: return n * 2;
    case CommDtype::Int8: return n / kInt8Block * (int64_t(sizeof(float)) + kInt8Block);
  }
  return 0;
}

void compress(CommDtype dtype, std::span<uint8_t> wire, std::span<const float> x) {
  const int64_t n = int64_t(x.size());
  TP_CHECK(n % comm_block(dtype) == 0 && int64_t(wire.size()) == wire_bytes(dtype, n), ShapeError,
           "compress: {} values into {} bytes of {}", n, wire.size(), comm_dtype_name(dtype));
  switch (dtype) {
    case CommDtype::F32: std::memcpy(wire.data(), x.data(), x.size_bytes()); break;
    case CommDtype::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t b = float_to_bf16(x[size_t(i)]).bits;
        std::memcpy(wire.data() + 2 * i, &b, 2);
      }
      break;
    case CommDtype::Int8:
      for (int64_t b = 0; b < n / kInt8Block; ++b)
        compress_int8_block(wire.data() + b * (4 + kInt8Block), x.data() + b * kInt8Block);
      break;
  }
}

void decompress(CommDtype dtype, std::span<float> x, std::span<const uint8_t> wire, bool accumulate) {
  const int64_t n = int64_t(x.size());
  TP_CHECK(n % comm_block(dtype) == 0 && int64_t(wire.size()) == wire_bytes(dtype, n), ShapeError,
           "decompress: {} values from {} bytes of {}", n, wire.size(), comm_dtype_name(dtype));
  float* out = x.data();
  switch (dtype) {
    case CommDtype::F32:
      for (int64_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, wire.data() + 4 * i, 4);
        out[i] = accumulate ? out[i] + v : v;
      }
      break;
    case CommDtype::BF16:
      for (int64_t i = 0; i < n; ++i) {
        bf16 b;
        std::memcpy(&b.bits, wire.data() + 2 * i, 2);
        const float v = bf16_to_float(b);
        out[i] = accumulate ? out[i] + v : v;
      }
      break;
    case CommDtype::Int8:
      for (int64_t b = 0; b < n / kInt8Block; ++b) {
        const uint8_t* block = wire.data() + b * (4 + kInt8Block);
        float d;
        std::memcpy(&d, block, sizeof(float));
        const int8_t* q = reinterpret_cast<const int8_t*>(block + sizeof(float));
        float* o = out + b * kInt8Block;
        for (int64_t i = 0; i < kInt8Block; ++i) {
          const float v = float(q[i]) * d;
          o[i] = accumulate ? o[i] + v : v;
        }
      }
      break;
  }
}

void all_reduce_compressed(ProcessGroup& group, std::span<float> data, CommDtype dtype) {
  if (dtype == CommDtype::F32) return group.all_reduce(data);
  const double t0 = MPI_Wtime();
  const int64_t t = group.size(), n = int64_t(data.size());
  if (t == 1 || n == 0) return group.record(Collective::AllReduce, 0, MPI_Wtime() - t0);
  const int64_t shard = round_up((n + t - 1) / t, comm_block(dtype)), cb = wire_bytes(dtype, shard);
  Scratch& s = scratch();
  s.padded.assign(size_t(shard * t), 0.0f);
  std::memcpy(s.padded.data(), data.data(), data.size_bytes());
  s.send.resize(size_t(cb * t));
  s.recv.resize(size_t(cb * t));
  compress(dtype, s.send, s.padded);  // shard r of the vector is bytes [r*cb, (r+1)*cb)
  {
    detail::InCollective in_flight("all_reduce (compressed)", group);
    MPI_CHECK(MPI_Alltoall(s.send.data(), mpi_bytes(cb, "all_reduce"), MPI_BYTE, s.recv.data(), int(cb), MPI_BYTE,
                           group.comm()),
              "all_reduce (compressed, alltoall)");
  }
  // this rank's shard: the f32 sum of every rank's dequantized contribution, in rank order
  std::span<float> reduced(s.padded.data(), size_t(shard));
  for (int64_t r = 0; r < t; ++r)
    decompress(dtype, reduced, std::span<const uint8_t>(s.recv.data() + r * cb, size_t(cb)), r > 0);
  compress(dtype, std::span<uint8_t>(s.send.data(), size_t(cb)), reduced);
  {
    detail::InCollective in_flight("all_reduce (compressed)", group);
    MPI_CHECK(MPI_Allgather(s.send.data(), int(cb), MPI_BYTE, s.recv.data(), int(cb), MPI_BYTE, group.comm()),
              "all_reduce (compressed, allgather)");
  }
  // every rank, the owner of each shard too, takes the dequantized wire value
  decompress(dtype, s.padded, s.recv, false);
  std::memcpy(data.data(), s.padded.data(), data.size_bytes());
  group.record(Collective::AllReduce, cb * t, MPI_Wtime() - t0);
}

void reduce_scatter_compressed(ProcessGroup& group, std::span<float> out, std::span<const float> in,
                               CommDtype dtype) {
  if (dtype == CommDtype::F32) return group.reduce_scatter(out, in);
  const int64_t t = group.size(), m = int64_t(out.size());
  TP_CHECK(int64_t(in.size()) == m * t, CommError,
           "reduce_scatter: input has {} elements but {} ranks x {} output elements were expected", in.size(), t, m);
  const double t0 = MPI_Wtime();
  if (t == 1) {
    std::memcpy(out.data(), in.data(), out.size_bytes());
    return group.record(Collective::ReduceScatter, 0, MPI_Wtime() - t0);
  }
  const int64_t chunk = round_up(m, comm_block(dtype)), cb = wire_bytes(dtype, chunk);
  Scratch& s = scratch();
  s.padded.assign(size_t(chunk), 0.0f);
  s.send.resize(size_t(cb * t));
  s.recv.resize(size_t(cb * t));
  for (int64_t r = 0; r < t; ++r) {
    std::memcpy(s.padded.data(), in.data() + r * m, size_t(m) * sizeof(float));
    compress(dtype, std::span<uint8_t>(s.send.data() + r * cb, size_t(cb)), s.padded);
  }
  {
    detail::InCollective in_flight("reduce_scatter (compressed)", group);
    MPI_CHECK(MPI_Alltoall(s.send.data(), mpi_bytes(cb, "reduce_scatter"), MPI_BYTE, s.recv.data(), int(cb),
                           MPI_BYTE, group.comm()),
              "reduce_scatter (compressed)");
  }
  for (int64_t r = 0; r < t; ++r)
    decompress(dtype, s.padded, std::span<const uint8_t>(s.recv.data() + r * cb, size_t(cb)), r > 0);
  std::memcpy(out.data(), s.padded.data(), out.size_bytes());
  group.record(Collective::ReduceScatter, cb * t, MPI_Wtime() - t0);
}

void all_gather_compressed(ProcessGroup& group, std::span<float> out, std::span<const float> in, CommDtype dtype) {
  if (dtype == CommDtype::F32) return group.all_gather(out, in);
  const int64_t t = group.size(), m = int64_t(in.size());
  TP_CHECK(int64_t(out.size()) == m * t, CommError,
           "all_gather: output has {} elements but {} ranks x {} input elements were expected", out.size(), t, m);
  const double t0 = MPI_Wtime();
  if (t == 1) {
    std::memcpy(out.data(), in.data(), in.size_bytes());
    return group.record(Collective::AllGather, 0, MPI_Wtime() - t0);
  }
  const int64_t chunk = round_up(m, comm_block(dtype)), cb = wire_bytes(dtype, chunk);
  Scratch& s = scratch();
  s.padded.assign(size_t(chunk), 0.0f);
  std::memcpy(s.padded.data(), in.data(), in.size_bytes());
  s.send.resize(size_t(cb));
  s.recv.resize(size_t(cb * t));
  compress(dtype, s.send, s.padded);
  {
    detail::InCollective in_flight("all_gather (compressed)", group);
    MPI_CHECK(MPI_Allgather(s.send.data(), mpi_bytes(cb, "all_gather"), MPI_BYTE, s.recv.data(), int(cb), MPI_BYTE,
                            group.comm()),
              "all_gather (compressed)");
  }
  for (int64_t r = 0; r < t; ++r) {
    decompress(dtype, s.padded, std::span<const uint8_t>(s.recv.data() + r * cb, size_t(cb)), false);
    std::memcpy(out.data() + r * m, s.padded.data(), size_t(m) * sizeof(float));
  }
  group.record(Collective::AllGather, cb * t, MPI_Wtime() - t0);
}

}  // namespace tensorpar
