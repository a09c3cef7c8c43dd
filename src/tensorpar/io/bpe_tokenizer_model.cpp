// BpeModel: vocabulary, merge table and the rank-ordered merge loop (see the header).
#include "tensorpar/io/bpe_tokenizer_model.hpp"

#include <atomic>
#include <climits>
#include <queue>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

namespace {
std::atomic<uint64_t> next_instance{1};
}

BpeModel::BpeModel() : instance_(next_instance++) {}

BpeModel::Cache& BpeModel::thread_cache() {
  thread_local Cache cache;
  return cache;
}

void BpeModel::add_token(const std::string& source, const std::string& token, int64_t id) {
  // Bounded far above real vocabularies (GPT-2 50257, Llama 32000, the largest ~256k), so a corrupt id
  // such as 2e9 is refused instead of sizing id_to_token_ to 64 GB (found by fuzz/fuzz_tokenizer).
  constexpr int64_t kMaxTokenId = int64_t(1) << 22;
  TP_CHECK(id >= 0 && id < kMaxTokenId && !token.empty(), IoError,
           "{}: token '{}' has id {}; ids must be in [0, {}) and tokens non-empty; the file is corrupt", source, token,
           id, kMaxTokenId);
  const auto [it, inserted] = token_to_id_.emplace(token, int32_t(id));
  TP_CHECK(inserted || it->second == id, IoError, "{}: token '{}' has two ids, {} and {}", source, token, it->second, id);
  if (size_t(id) >= id_to_token_.size()) id_to_token_.resize(size_t(id) + 1);
  TP_CHECK(id_to_token_[size_t(id)].empty() || id_to_token_[size_t(id)] == token, IoError,
           "{}: id {} is used by both '{}' and '{}'", source, id, id_to_token_[size_t(id)], token);
  id_to_token_[size_t(id)] = token;
}

void BpeModel::add_merge(const std::string& source, size_t index, const std::string& a, const std::string& b) {
  const auto ia = find(a), ib = find(b), im = find(a + b);
  TP_CHECK(ia && ib && im, IoError,
           "{}: merge {} ('{}' '{}') uses a token that is not in the vocabulary ('{}'); the vocabulary and the merges "
           "do not belong together",
           source, index, a, b, !ia ? a : !ib ? b : a + b);
  // A repeated merge keeps its first (best) rank.
  merges_.emplace(key(*ia, *ib), Merge{int32_t(merges_.size()), *im});
  if (in_merge_.size() < id_to_token_.size()) in_merge_.resize(id_to_token_.size());
  in_merge_[size_t(*ia)] = in_merge_[size_t(*ib)] = true;
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
  const auto it = token_to_id_.find(token);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::token(int32_t id) const {
  TP_CHECK(has_id(id), ConfigError,
           "tokenizer: token id {} is not in the vocabulary (size {}); the model and tokenizer do not match", id,
           id_to_token_.size());
  return id_to_token_[size_t(id)];
}

bool BpeModel::merges_with(int32_t id) const { return id >= 0 && size_t(id) < in_merge_.size() && in_merge_[size_t(id)]; }

void BpeModel::merge(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  // Symbols form a linked list over the original positions; a merged-away symbol gets len 0.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> s(n);
  for (size_t i = 0; i < n; ++i) s[i] = {symbols[i], int32_t(i) - 1, i + 1 < n ? int32_t(i + 1) : -1, true};
  struct Candidate {
    int32_t rank, pos, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](int32_t pos) {
    const int32_t next = s[size_t(pos)].next;
    if (next < 0) return;
    const auto it = merges_.find(key(s[size_t(pos)].id, s[size_t(next)].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.merged});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = s[size_t(c.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = s[size_t(left.next)];
    // Stale entry: one of the two symbols changed since the pair was queued.
    const auto it = merges_.find(key(left.id, right.id));
    if (it == merges_.end() || it->second.merged != c.merged) continue;
    left.id = c.merged;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) s[size_t(left.next)].prev = c.pos;
    if (left.prev >= 0) push(left.prev);
    push(c.pos);
  }
  size_t k = 0;
  for (int32_t i = 0; i >= 0; i = s[size_t(i)].next) symbols[k++] = s[size_t(i)].id;
  symbols.resize(k);
}

}  // namespace tensorpar::io
