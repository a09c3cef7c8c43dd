// Collective bandwidth of ProcessGroup, measured as NCCL-tests does: for each message size,
// warm up, then repeat for at least --min-time seconds; time per call is the slowest rank's mean.
//   algbw = bytes / time
//   busbw = bytes * 2(n-1)/n / time  (the traffic each link carries in a ring all-reduce, so the
//           number is comparable across rank counts and with the link's raw bandwidth)
// Operations: all_reduce (blocking), all_reduce_async + wait, and reduce_scatter + all_gather (the
// same result as an all-reduce; the pair a sequence-parallel layer would use).
//
// Usage: mpirun -np 2 --bind-to core build/bench/bench_allreduce [--json] [--min-time S]
//                                                              [--min-bytes B] [--max-bytes B]
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tensorpar/comm/process_group.hpp"

namespace {

using tensorpar::ProcessGroup;

struct Options {
  bool json = false;
  double min_time = 0.2;
  int64_t min_bytes = 4 << 10, max_bytes = 64 << 20;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      TP_CHECK(i + 1 < argc, tensorpar::ConfigError, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--json") o.json = true;
    else if (a == "--min-time") o.min_time = std::atof(value());
    else if (a == "--min-bytes") o.min_bytes = std::atoll(value());
    else if (a == "--max-bytes") o.max_bytes = std::atoll(value());
    else throw tensorpar::ConfigError(fmt::format("unknown argument '{}' (use --json, --min-time, --min-bytes, "
                                                  "--max-bytes)", a));
  }
  TP_CHECK(o.min_bytes > 0 && o.min_bytes <= o.max_bytes, tensorpar::ConfigError,
           "need 0 < --min-bytes ({}) <= --max-bytes ({})", o.min_bytes, o.max_bytes);
  return o;
}

enum class Op { AllReduce, AllReduceAsync, ReduceScatterAllGather };
const char* op_name(Op op) {
  switch (op) {
    case Op::AllReduce: return "all_reduce";
    case Op::AllReduceAsync: return "all_reduce_async";
    case Op::ReduceScatterAllGather: return "rs+ag";
  }
  return "?";
}

// Buffers for one message size: data (count) is what an all-reduce works on in place; shard
// (count / ranks) receives the reduce_scatter and feeds the all_gather back into data.
struct Buffers {
  std::vector<float> data, shard;
};

void run_op(ProcessGroup& pg, Op op, Buffers& b) {
  switch (op) {
    case Op::AllReduce: pg.all_reduce(std::span<float>(b.data)); break;
    case Op::AllReduceAsync: pg.all_reduce_async(std::span<float>(b.data)).wait(); break;
    case Op::ReduceScatterAllGather:
      pg.reduce_scatter(std::span<float>(b.shard), std::span<const float>(b.data));
      pg.all_gather(std::span<float>(b.data), std::span<const float>(b.shard));
      break;
  }
}

// Seconds per call, slowest rank, over `reps` back-to-back calls started together.
double time_reps(ProcessGroup& pg, Op op, Buffers& b, int64_t reps) {
  pg.barrier();
  const double t0 = MPI_Wtime();
  for (int64_t r = 0; r < reps; ++r) run_op(pg, op, b);
  double dt = (MPI_Wtime() - t0) / double(reps);
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, pg.comm()), "all_reduce (timing)");
  return dt;
}

// Each rank contributes rank+1; every element must come back as n(n+1)/2. A benchmark of a wrong
// collective is worthless, so check before timing.
void check_result(ProcessGroup& pg, Op op, Buffers& b) {
  std::fill(b.data.begin(), b.data.end(), float(pg.rank() + 1));
  run_op(pg, op, b);
  const float want = float(pg.size() * (pg.size() + 1) / 2);
  const auto bad = std::find_if(b.data.begin(), b.data.end(), [&](float x) { return x != want; });
  std::string error;
  if (bad != b.data.end())
    error = fmt::format("{} of {} floats: element {} is {} on rank {}, expected {}", op_name(op), b.data.size(),
                        bad - b.data.begin(), *bad, pg.rank(), want);
  pg.agree<tensorpar::CommError>(error);
}

std::string affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return "?";
  std::string s;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) s += fmt::format("{}{}", s.empty() ? "" : ",", c);
  return s;
}

void run(const Options& o) {
  ProcessGroup pg = ProcessGroup::world();
  const int n = pg.size();
  // Who runs where: shows at a glance whether --bind-to core took effect.
  const std::string mine = fmt::format("rank {} cpus {}", pg.rank(), affinity());
  std::vector<char> all(size_t(n) * 64, 0), me(64, 0);
  std::memcpy(me.data(), mine.data(), std::min<size_t>(mine.size(), 63));
  MPI_CHECK(MPI_Gather(me.data(), 64, MPI_CHAR, all.data(), 64, MPI_CHAR, 0, pg.comm()), "gather (affinity)");
  if (pg.rank() == 0 && !o.json) {
    fmt::print("# ranks {}; >= {} s per size; time = median over 5 batches of the slowest rank's mean per call\n", n,
               o.min_time);
    for (int r = 0; r < n; ++r) fmt::print("#   {}\n", all.data() + size_t(r) * 64);
    fmt::print("{:>18} {:>10} {:>8} {:>10} {:>10} {:>11} {:>11} {:>11}\n", "op", "bytes", "reps", "time_us", "best_us",
               "algbw_GB/s", "busbw_GB/s", "best_busbw");
  }
  const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 0.0;
  for (Op op : {Op::AllReduce, Op::AllReduceAsync, Op::ReduceScatterAllGather}) {
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) {
      // Element count rounded down to a multiple of the rank count (reduce_scatter needs it).
      const int64_t count = std::max<int64_t>(n, bytes / int64_t(sizeof(float)) / n * n);
      Buffers b{std::vector<float>(size_t(count)), std::vector<float>(size_t(count / n))};
      check_result(pg, op, b);
      std::fill(b.data.begin(), b.data.end(), 0.0f);  // zeros: sums stay finite however many reps
      // Warm up (connections, page faults, protocol switch), then grow a calibration batch until it
      // lasts a tenth of the target, so the rep count for the measured run is not a guess from
      // three noisy calls.
      // dt is the same on every rank (max-reduced), so all ranks take the same branches.
      int64_t batch = 3;
      double dt = time_reps(pg, op, b, batch);
      while (dt * double(batch) < o.min_time / 10) {
        batch *= 4;
        dt = time_reps(pg, op, b, batch);
      }
      int64_t reps = std::max<int64_t>(5, int64_t(1.1 * o.min_time / std::max(dt, 1e-8)) + 1);
      MPI_CHECK(MPI_Bcast(&reps, 1, MPI_INT64_T, 0, pg.comm()), "broadcast (reps)");  // every rank the same
      // Five batches; the median is robust to another process stealing the core for a while
      // (this machine is shared), the best shows what the link can do.
      constexpr int kBatches = 5;
      const int64_t per_batch = std::max<int64_t>(1, reps / kBatches);
      std::vector<double> times;
      for (int i = 0; i < kBatches; ++i) times.push_back(time_reps(pg, op, b, per_batch));
      std::sort(times.begin(), times.end());
      dt = times[kBatches / 2];
      const double best = times.front();
      const double real_bytes = double(count) * sizeof(float);
      const double algbw = real_bytes / dt * 1e-9, busbw = algbw * bus_factor;
      if (pg.rank() != 0) continue;
      const int64_t measured = per_batch * kBatches;
      const double best_busbw = real_bytes / best * 1e-9 * bus_factor;
      if (o.json)
        fmt::print("{{\"op\":\"{}\",\"ranks\":{},\"bytes\":{},\"reps\":{},\"time_us\":{:.3f},\"best_us\":{:.3f},"
                   "\"algbw_GBps\":{:.4f},\"busbw_GBps\":{:.4f},\"best_busbw_GBps\":{:.4f}}}\n",
                   op_name(op), n, int64_t(real_bytes), measured, dt * 1e6, best * 1e6, algbw, busbw, best_busbw);
      else
        fmt::print("{:>18} {:>10} {:>8} {:>10.1f} {:>10.1f} {:>11.3f} {:>11.3f} {:>11.3f}\n", op_name(op),
                   int64_t(real_bytes), measured, dt * 1e6, best * 1e6, algbw, busbw, best_busbw);
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  try {
    run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    rc = 1;
  }
  if (rc != 0) MPI_Abort(MPI_COMM_WORLD, rc);  // only main decides to end all ranks
  MPI_Finalize();
  return 0;
}
