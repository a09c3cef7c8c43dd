// The BPE model shared by the GPT-2 and the SentencePiece-style (Llama) tokenizers: a vocabulary
// (token string <-> id) and merge rules by rank, applied to a word's symbols as Hugging Face
// tokenizers' BPE does: repeatedly merge the adjacent pair with the best (lowest) rank, the leftmost
// first among equal ranks. (For trained merge lists this equals the original GPT-2 loop that merges
// every occurrence of the best pair left to right.)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tensorpar::io {

class BpeModel {
 public:
  BpeModel();
  BpeModel(BpeModel&&) = default;
  BpeModel& operator=(BpeModel&&) = default;

  // IoError naming `source` for duplicate or conflicting entries.
  void add_token(const std::string& source, const std::string& token, int64_t id);
  // Merges get ranks in the order they are added. a, b and a+b must be in the vocabulary (IoError
  // otherwise, as Hugging Face refuses such files); `index` is for the message.
  void add_merge(const std::string& source, size_t index, const std::string& a, const std::string& b);

  std::optional<int32_t> find(std::string_view token) const;
  bool has_id(int32_t id) const { return id >= 0 && size_t(id) < id_to_token_.size() && !id_to_token_[size_t(id)].empty(); }
  const std::string& token(int32_t id) const;  // ConfigError for an id outside the vocabulary
  int64_t size() const { return int64_t(id_to_token_.size()); }  // largest id + 1
  size_t merge_count() const { return merges_.size(); }
  // True if some merge has `id` as its left or right part.
  bool merges_with(int32_t id) const;

  // Merges `symbols` (token ids of one word, in order) in place.
  void merge(std::vector<int32_t>& symbols) const;
  // Appends the merged ids of a short piece of text, memoised per thread (words repeat, so most
  // pieces of a large text are found there). init(piece, symbols) gives the piece's initial symbols.
  template <class Init>
  void merge_piece(std::string_view piece, Init&& init, std::vector<int32_t>& out) const;

 private:
  struct Hash {  // lets find() look up a string_view without building a string
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> token_to_id_;
  std::vector<std::string> id_to_token_;
  struct Merge {
    int32_t rank, merged;
  };
  static uint64_t key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank and merged id
  std::vector<bool> in_merge_;                  // id -> appears in some merge
  uint64_t instance_;                           // owner of this model's entries in the per-thread cache

  struct Cache {
    uint64_t owner = 0;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> pieces;
  };
  static Cache& thread_cache();
  static constexpr size_t kMaxCachedPieces = 1 << 18, kMaxCachedPieceBytes = 64;
};

template <class Init>
void BpeModel::merge_piece(std::string_view piece, Init&& init, std::vector<int32_t>& out) const {
  Cache& cache = thread_cache();
  if (cache.owner != instance_ || cache.pieces.size() >= kMaxCachedPieces) {  // bounded: unique pieces never stop
    cache.pieces.clear();
    cache.owner = instance_;
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    const auto it = cache.pieces.find(piece);
    if (it != cache.pieces.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  init(piece, symbols);
  merge(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) cache.pieces.emplace(std::string(piece), std::move(symbols));
}

}  // namespace tensorpar::io
