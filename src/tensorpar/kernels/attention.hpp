// Causal multi-head self-attention with grouped-query attention (GQA): training forward/backward on a
// fused QKV projection, and the inference forward against a KV cache.
//
// Flash-attention style: per (batch, head) and per block of query rows, S = Q K^T is computed with
// gemm only for the causal key range, in key blocks with an online softmax, and O = P V with gemm.
// The full T x T score matrix is never built; scratch is O(block^2 + block*head_dim) per thread.
// The backward recomputes P from the saved log-sum-exp.
#pragma once
#include <cstdint>

namespace tensorpar {

// n_heads query heads share n_kv_heads key/value heads (n_heads % n_kv_heads == 0); query head h
// uses kv head h / (n_heads / n_kv_heads). n_kv_heads == n_heads is plain multi-head attention.
struct AttentionDims {
  int64_t batch, seq, n_heads, n_kv_heads, head_dim;
};

// qkv (B*T, (H + 2*KV)*hd): each row is [q of heads 0..H-1 | k of kv heads 0..KV-1 | v of kv heads 0..KV-1].
// out (B*T, H*hd) = softmax(mask(Q K^T / sqrt(hd))) V per head, causal (query t sees keys 0..t).
// lse (B, H, T): log-sum-exp of each query's scaled, masked scores, saved for the backward.
void attention_forward(float* out, float* lse, const float* qkv, const AttentionDims& d);

// dqkv (B*T, (H + 2*KV)*hd) OVERWRITTEN with the gradients of q, k and v (dk/dv summed over the query
// heads that share a kv head). dout, out (B*T, H*hd); lse (B, H, T) and qkv as in the forward.
void attention_backward(float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
                        const AttentionDims& d);

// The same forward and backward with the six block GEMMs in bf16 (operands rounded to bf16, products
// summed in f32; the softmax, lse, D and the outputs stay f32), for bf16 training. Each (batch, head)
// task rounds its Q, K, V (and dO) once into the pair layouts AVX512-BF16 reads, and the softmax and
// its backward write P and dS in them directly. Without AVX512-BF16 the f32 kernels above run.
// Errors against the f32 kernels: tests/kernels/test_attention_bf16.cpp states the bounds.
void attention_forward_bf16(float* out, float* lse, const float* qkv, const AttentionDims& d);
void attention_backward_bf16(float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
                             const AttentionDims& d);

// Inference with a KV cache: n_new query rows per batch element at positions past_len .. past_len+n_new-1.
// q (B*n_new, H*hd, row stride ldq); k_cache, v_cache (B, max_seq, KV*hd) already hold positions
// 0 .. past_len+n_new-1. out (B*n_new, H*hd). The query at position p sees cache positions 0..p.
// d.seq is not used (n_new and past_len give the shape).
void attention_forward_cached(float* out, const float* q, int64_t ldq, const float* k_cache, const float* v_cache,
                              int64_t max_seq, int64_t past_len, int64_t n_new, const AttentionDims& d);

}  // namespace tensorpar
