// The pieces pipeline parallelism adds to comm/: the T x P x D mesh (TP innermost, then stages,
// then replicas) and non-blocking point-to-point send/recv returning Work. Closed-form expectations
// at every world size and every (T, P) that divides it.
#include <gtest/gtest.h>

#include <vector>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

TEST(Mesh3D, RanksAreTensorThenStageThenReplica) {
  ProcessGroup world = ProcessGroup::world();
  const int n = world.size(), r = world.rank();
  for (int t = 1; t <= n; ++t)
    for (int p = 1; p <= n; ++p) {
      if (n % (t * p) != 0) {
        EXPECT_THROW(Mesh(world, t, p), ConfigError) << "t " << t << " p " << p;
        continue;
      }
      Mesh mesh(world, t, p);
      const int d = n / (t * p);
      ASSERT_EQ(mesh.tp_size(), t);
      ASSERT_EQ(mesh.pp_size(), p);
      ASSERT_EQ(mesh.dp_size(), d);
      EXPECT_EQ(mesh.tp().rank(), r % t);
      EXPECT_EQ(mesh.pp().rank(), r / t % p);
      EXPECT_EQ(mesh.dp().rank(), r / (t * p));
      // each group's members, summed: the world ranks the layout formula names
      const auto sum = [](ProcessGroup& g, int64_t x) {
        std::vector<int64_t> v{x};
        g.all_reduce(std::span<int64_t>(v));
        return v[0];
      };
      const int tr = r % t, pr = r / t % p, dr = r / (t * p);
      int64_t tp_sum = 0, pp_sum = 0, dp_sum = 0;
      for (int i = 0; i < t; ++i) tp_sum += (dr * p + pr) * t + i;
      for (int i = 0; i < p; ++i) pp_sum += (dr * p + i) * t + tr;
      for (int i = 0; i < d; ++i) dp_sum += (i * p + pr) * t + tr;
      EXPECT_EQ(sum(mesh.tp(), r), tp_sum);
      EXPECT_EQ(sum(mesh.pp(), r), pp_sum);
      EXPECT_EQ(sum(mesh.dp(), r), dp_sum);
      // the embedding group pairs the first and last stage at the same tensor rank and replica
      const bool ends = p > 1 && (pr == 0 || pr == p - 1);
      EXPECT_EQ(mesh.embedding().size(), ends ? 2 : 1);
      if (ends) {
        EXPECT_EQ(sum(mesh.embedding(), r), int64_t(dr * p * t + tr) + ((dr * p + p - 1) * t + tr));
      }
    }
}

// Every rank sends to the next and receives from the previous (a ring), both started before either
// is waited: with blocking calls this exchange could deadlock, with Work handles it cannot.
TEST(PointToPoint, RingExchangeCompletesAndCounts) {
  ProcessGroup world = ProcessGroup::world();
  const int n = world.size(), r = world.rank();
  if (n == 1) {  // a rank never sends to itself: refused with a CommError, not left hanging
    std::vector<float> x(4);
    EXPECT_THROW(world.send(std::span<const float>(x), 0), CommError);
    EXPECT_THROW(world.recv(std::span<float>(x), 0), CommError);
    return;
  }
  std::vector<float> out(1000), in(1000, -1.0f);
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(r * 10000 + int(i));
  Work received = world.recv(std::span<float>(in), (r + n - 1) % n, 7);
  Work sent = world.send(std::span<const float>(out), (r + 1) % n, 7);
  EXPECT_TRUE(received.pending());
  received.wait();
  sent.wait();
  EXPECT_FALSE(received.pending());
  const int from = (r + n - 1) % n;
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(in[i], float(from * 10000 + int(i))) << "index " << i;
  EXPECT_EQ(world.stats().count(Collective::Send), 1);
  EXPECT_EQ(world.stats().count(Collective::Recv), 1);
  EXPECT_EQ(world.stats().bytes[size_t(Collective::Send)], 4000);
}

// Messages of one tag between two ranks arrive in the order sent (the pipeline relies on it for its
// micro-batches), and tags keep activations and gradients apart.
TEST(PointToPoint, SameTagMessagesArriveInOrder) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() < 2 || world.rank() > 1) return;
  const int peer = 1 - world.rank();
  constexpr int kMessages = 5;
  std::vector<std::vector<float>> out(kMessages, std::vector<float>(64)), in(kMessages, std::vector<float>(64));
  std::vector<float> other_out(3, float(world.rank() + 100)), other_in(3);
  std::vector<Work> works;
  for (int m = 0; m < kMessages; ++m) {
    for (float& x : out[size_t(m)]) x = float(world.rank() * 100 + m);
    works.push_back(world.recv(std::span<float>(in[size_t(m)]), peer, 0));
  }
  works.push_back(world.recv(std::span<float>(other_in), peer, 1));
  works.push_back(world.send(std::span<const float>(other_out), peer, 1));
  for (int m = 0; m < kMessages; ++m) works.push_back(world.send(std::span<const float>(out[size_t(m)]), peer, 0));
  for (Work& w : works) w.wait();
  for (int m = 0; m < kMessages; ++m)
    for (float x : in[size_t(m)]) ASSERT_EQ(x, float(peer * 100 + m)) << "message " << m;
  for (float x : other_in) EXPECT_EQ(x, float(peer + 100));
}

// A receive into a buffer smaller than the message fails in wait() with a CommError, not silently.
TEST(PointToPoint, TruncatedReceiveThrowsOnWait) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() < 2 || world.rank() > 1) return;
  std::vector<float> big(16, 1.0f), small(4);
  if (world.rank() == 0) {
    world.send(std::span<const float>(big), 1).wait();
  } else {
    Work w = world.recv(std::span<float>(small), 0);
    EXPECT_THROW(w.wait(), CommError);
  }
}

}  // namespace tensorpar
