// Compressed collectives for slow links: all-reduce, reduce-scatter and all-gather of f32 data whose
// bytes travel as bf16 (round-to-nearest-even) or as blockwise int8 (32 values and one f32 scale
// max|x|/127 per block, as ggml's Q8_0 / distributed-llama's Q80), summed in f32.
//
// all-reduce = reduce-scatter + all-gather of compressed bytes: every rank compresses its vector in
// t shards and exchanges them (MPI_Alltoall), dequantizes the t contributions to its own shard and
// sums them in f32 in rank order, compresses the reduced shard again and all-gathers the compressed
// shards, which every rank (the owner too) dequantizes. So every rank ends with bit-identical values,
// which tensor-parallel ranks need to stay in lock-step. Sizes that the group or the block do not
// divide are padded with zeros. Group size 1 is a no-op (nothing is rounded). CommDtype::F32 calls the
// group's plain collectives. Stats count one collective each, with the bytes of the compressed
// padded vector (f32 records 4 bytes per element; bf16 2; int8 36 per 32).
//
// Error per element (x_r: rank r's contribution, s = sum_r x_r):
//   bf16 all-reduce: |out - s| <= 2^-8 sum_r |x_r| + 2^-8 |s'| + f32 summation, s' = the f32 sum
//   int8 all-reduce: |out - s| <= sum_r d_r / 2 + d' / 2, d_r the scale of x_r's block, d' of s''s
//   reduce-scatter: the first term only (the reduced shard stays f32); all-gather: one rounding.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

inline constexpr int64_t kInt8Block = 32;  // values per int8 block (one f32 scale each)

// Elements a compressed chunk must be a multiple of (1 for f32/bf16, 32 for int8).
int64_t comm_block(CommDtype dtype);
// Bytes of n values (n a multiple of comm_block) in the wire format.
int64_t wire_bytes(CommDtype dtype, int64_t n);
// wire (wire_bytes(dtype, x.size())) = x compressed; x.size() must be a multiple of comm_block.
void compress(CommDtype dtype, std::span<uint8_t> wire, std::span<const float> x);
// x = decompress(wire); accumulate: x += decompress(wire) (f32).
void decompress(CommDtype dtype, std::span<float> x, std::span<const uint8_t> wire, bool accumulate);

// "f32" | "bf16" | "int8"; ConfigError otherwise.
CommDtype parse_comm_dtype(const std::string& name);

// In place: data = sum over the group's ranks, compressed on the wire.
void all_reduce_compressed(ProcessGroup& group, std::span<float> data, CommDtype dtype);
// out[i] = sum over ranks r of in_r[rank * out.size() + i]; f32 result of compressed contributions.
void reduce_scatter_compressed(ProcessGroup& group, std::span<float> out, std::span<const float> in,
                               CommDtype dtype);
// out[r * in.size() + i] = decompress(compress(in_r))[i], for every rank r (its own included).
void all_gather_compressed(ProcessGroup& group, std::span<float> out, std::span<const float> in, CommDtype dtype);

}  // namespace tensorpar
