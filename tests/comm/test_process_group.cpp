// Collectives at every world size against closed-form expected values (as gloo's tests do).
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

TEST(ProcessGroup, AllReduceSumsInPlaceAndCounts) {
  ProcessGroup world = ProcessGroup::world();
  const int n = world.size(), r = world.rank();
  std::vector<float> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(r + 1) * float(i);
  world.all_reduce(std::span<float>(data));
  const float ranks_sum = float(n * (n + 1) / 2);
  for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], ranks_sum * float(i)) << "index " << i;
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1);
  EXPECT_EQ(world.stats().bytes[size_t(Collective::AllReduce)], 4000);
}

TEST(ProcessGroup, AllReduceMaxAndDouble) {
  ProcessGroup world = ProcessGroup::world();
  std::vector<double> v{double(world.rank()), -double(world.rank())};
  world.all_reduce(std::span<double>(v), {ReduceOp::Max});
  EXPECT_EQ(v[0], world.size() - 1);
  EXPECT_EQ(v[1], 0.0);
}

TEST(ProcessGroup, AsyncAllReduceCompletesOnWaitInEveryMode) {
  ProcessGroup world = ProcessGroup::world();
  for (AsyncMode mode : {AsyncMode::Nonblocking, AsyncMode::Deferred}) {
    world.set_async_mode(mode);
    std::vector<float> data(1 << 16, 1.0f);
    Work work = world.all_reduce_async(std::span<float>(data));
    EXPECT_EQ(work.pending(), world.size() > 1);
    Work moved = std::move(work);  // handles move; the moved-from one is empty
    EXPECT_FALSE(work.pending());
    moved.wait();
    EXPECT_FALSE(moved.pending());
    for (float x : data) ASSERT_EQ(x, float(world.size()));
    {
      std::vector<float> dropped(8, 2.0f);
      Work unwaited = world.all_reduce_async(std::span<float>(dropped));
    }  // destroyed unwaited: completes in the destructor on every rank, nothing left dangling
  }
}

TEST(ProcessGroup, AllGatherIsRankMajor) {
  ProcessGroup world = ProcessGroup::world();
  std::vector<float> in{float(world.rank()), float(10 * world.rank())};
  std::vector<float> out(2 * size_t(world.size()));
  world.all_gather(std::span<float>(out), std::span<const float>(in));
  for (int r = 0; r < world.size(); ++r) {
    EXPECT_EQ(out[2 * r], float(r));
    EXPECT_EQ(out[2 * r + 1], float(10 * r));
  }
}

TEST(ProcessGroup, ReduceScatterGivesEachRankItsSummedBlock) {
  ProcessGroup world = ProcessGroup::world();
  const int n = world.size();
  std::vector<float> in(3 * size_t(n));
  std::iota(in.begin(), in.end(), 0.0f);  // same on every rank
  std::vector<float> out(3);
  world.reduce_scatter(std::span<float>(out), std::span<const float>(in));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i], float(n * (3 * world.rank() + i)));
}

// Uneven pieces in place (ZeRO-1's buckets): rank q's piece has q + 2 elements (a zero-length one
// for the last rank too, to cover it), blocking and non-blocking, at every world size including 3.
TEST(ProcessGroup, UnevenInPlaceReduceScatterAndAllGather) {
  ProcessGroup world = ProcessGroup::world();
  const int n = world.size(), r = world.rank();
  std::vector<int> counts;
  for (int q = 0; q < n; ++q) counts.push_back(q + 1 == n && n > 1 ? 0 : q + 2);
  const int total = std::accumulate(counts.begin(), counts.end(), 0);
  const int offset = std::accumulate(counts.begin(), counts.begin() + r, 0);
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "non-blocking" : "blocking");
    // element i is (r + 1) * i on rank r: the sum over ranks is n(n+1)/2 * i
    std::vector<float> data(static_cast<size_t>(total));
    for (int i = 0; i < total; ++i) data[size_t(i)] = float((r + 1) * i);
    world.reset_stats();
    if (async) {
      Work w = world.reduce_scatter_in_place_async(std::span<float>(data), counts);
      w.wait();
    } else {
      world.reduce_scatter_in_place(std::span<float>(data), counts);
    }
    // this rank's summed piece, at the start of the buffer as MPI puts it
    for (int i = 0; i < counts[size_t(r)]; ++i)
      ASSERT_EQ(data[size_t(i)], float(n * (n + 1) / 2 * (offset + i))) << "element " << i;
    EXPECT_EQ(world.stats().count(Collective::ReduceScatter), 1);
    EXPECT_EQ(world.stats().bytes[size_t(Collective::ReduceScatter)], 4 * total);

    // every rank fills its own piece with its rank; the gather brings the others
    std::vector<float> gathered(size_t(total), -1.0f);
    for (int i = 0; i < counts[size_t(r)]; ++i) gathered[size_t(offset + i)] = float(r);
    if (async) {
      Work w = world.all_gather_in_place_async(std::span<float>(gathered), counts);
      w.wait();
    } else {
      world.all_gather_in_place(std::span<float>(gathered), counts);
    }
    for (int q = 0, i = 0; q < n; ++q)
      for (int k = 0; k < counts[size_t(q)]; ++k, ++i) ASSERT_EQ(gathered[size_t(i)], float(q)) << "element " << i;
    EXPECT_EQ(world.stats().count(Collective::AllGather), 1);
  }
  // counts that do not add up to the buffer are refused before any rank talks
  std::vector<float> wrong(size_t(total) + 1);
  EXPECT_THROW(world.reduce_scatter_in_place(std::span<float>(wrong), counts), CommError);
  EXPECT_THROW(world.all_gather_in_place_async(std::span<float>(wrong), counts), CommError);
}

TEST(ProcessGroup, BroadcastFromLastRank) {
  ProcessGroup world = ProcessGroup::world();
  const int root = world.size() - 1;
  std::vector<int64_t> v{world.rank() == root ? 42 : 0};
  world.broadcast(std::span<int64_t>(v), root);
  EXPECT_EQ(v[0], 42);
  std::string s = world.rank() == root ? "hello" : "";
  world.broadcast_string(s, root);
  EXPECT_EQ(s, "hello");
}

TEST(ProcessGroup, AgreeThrowsTheSameErrorOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  const int failing = world.size() - 1;
  std::string local = world.rank() == failing ? "cannot read weights.bin" : "";
  try {
    world.agree<IoError>(local);
    FAIL() << "expected IoError on rank " << world.rank();
  } catch (const IoError& e) {
    EXPECT_STREQ(e.what(), "cannot read weights.bin");
  }
  EXPECT_NO_THROW(world.agree(""));
}

TEST(ProcessGroup, WrongSizesThrowBeforeTalking) {
  ProcessGroup world = ProcessGroup::world();
  std::vector<float> in(2), out(3);
  EXPECT_THROW(world.all_gather(std::span<float>(out), std::span<const float>(in)), CommError);
}

TEST(ProcessGroup, SplitGroupsByColourOrderedByKey) {
  ProcessGroup world = ProcessGroup::world();
  const int n = world.size(), r = world.rank();
  // even and odd ranks, each group in reverse world order
  ProcessGroup half = world.split(r % 2, n - r, "half");
  const int members = (n - r % 2 + 1) / 2;  // how many ranks share my parity
  EXPECT_EQ(half.size(), members);
  EXPECT_EQ(half.rank(), members - 1 - r / 2);
  std::vector<int64_t> v{r};
  half.all_reduce(std::span<int64_t>(v));
  int64_t expected = 0;
  for (int q = r % 2; q < n; q += 2) expected += q;
  EXPECT_EQ(v[0], expected);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 0) << "the split group's traffic is its own";
}

TEST(Mesh, SplitsWorldIntoContiguousTensorGroups) {
  ProcessGroup world = ProcessGroup::world();
  for (int tp = 1; tp <= world.size(); ++tp) {
    if (world.size() % tp != 0) {
      EXPECT_THROW(Mesh(world, tp), ConfigError);
      continue;
    }
    Mesh mesh(world, tp);
    EXPECT_EQ(mesh.tp_size(), tp);
    EXPECT_EQ(mesh.dp_size(), world.size() / tp);
    EXPECT_EQ(mesh.tp().rank(), world.rank() % tp);
    EXPECT_EQ(mesh.dp().rank(), world.rank() / tp);
    // sum of world ranks within my TP group: ranks base..base+tp-1
    std::vector<int64_t> v{world.rank()};
    mesh.tp().all_reduce(std::span<int64_t>(v));
    const int64_t base = world.rank() / tp * tp;
    EXPECT_EQ(v[0], tp * base + tp * (tp - 1) / 2);
  }
}

}  // namespace tensorpar
