// Softmax + dropout over one row of attention scores, forward and backward, in float32: the arithmetic
// both backends' CPU training kernels share (bench/backends/mxnet/cpu_kernels.cc, through MXNet's
// operator-library API; bench/backends/torch/cpu_kernels.cc, through a C ABI). Header-only; compiled
// by bench/run/native_build.py.
//
// Why one pass: a framework's graph for the attention probabilities of a training step (mask add,
// softmax, dropout, and their backwards) makes five to eight passes over a (batch, heads, L, L) tensor
// and draws one random number per element; here the forward reads the scores once and writes the
// dropped probabilities once, and the backward needs only the output and the recomputed softmax:
//   with y the softmax, m the keep mask and d = y * m / keep the output,
//   dx_i = y_i * (g_i * m_i / keep - sum_j g_j * m_j / keep * y_j) = g_i * d_i - y_i * sum_j g_j * d_j.
// Dropout draws 16 bits per element from splitmix64, a counter-based generator: each row's draws depend
// only on (seed, row), never on the thread count; the caller takes the seed from its framework's seeded
// generator, so the framework's seed repeats the masks.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace bench_native {

// exp(x) for x <= 0 (scores minus their row maximum): Cephes' single-precision polynomial after range
// reduction, relative error about 2e-7, written so that the compiler vectorizes the loops. Below -87
// (a padded key's additive mask, or a weight under 1e-38) it is exactly 0, as expf underflows.
inline float exp_nonpositive(float x) {
  const bool negligible = x < -87.0f;
  x = negligible ? -87.0f : x;
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float mantissa = poly * r * r + r + 1.0f;
  const int32_t exponent_bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent_bits, sizeof(scale));
  return negligible ? 0.0f : mantissa * scale;
}

inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The 16-bit draw at or above which an element is kept: p honoured to 1/65536.
inline uint32_t dropout_threshold(float p) { return static_cast<uint32_t>(std::lround(p * 65536.0f)); }

// The generator position of row `row` of a call seeded with `seed`.
inline uint64_t row_stream(uint64_t seed, int64_t row) { return splitmix64(seed ^ static_cast<uint64_t>(row)); }

// Writes exp(s_j + m_j - max) for j < keys into `weights` and returns 1 / their sum; `mask` (additive,
// m_j) may be null.
inline float softmax_row(const float* scores, const float* mask, int64_t keys, float* weights) {
  // Two copies of the same loops on purpose: a mask test inside them would keep the compiler from
  // vectorizing, and reading a row of zeros instead would cost a load per score.
  if (mask == nullptr) {
    float top = scores[0];
#pragma omp simd reduction(max : top)
    for (int64_t j = 1; j < keys; ++j) top = scores[j] > top ? scores[j] : top;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < keys; ++j) {
      weights[j] = exp_nonpositive(scores[j] - top);
      total += weights[j];
    }
    return 1.0f / total;
  }
  float top = scores[0] + mask[0];
#pragma omp simd reduction(max : top)
  for (int64_t j = 1; j < keys; ++j) top = scores[j] + mask[j] > top ? scores[j] + mask[j] : top;
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < keys; ++j) {
    weights[j] = exp_nonpositive(scores[j] + mask[j] - top);
    total += weights[j];
  }
  return 1.0f / total;
}

// Scales the row's weights by `scale` and drops some: one 16-bit draw per key (four per 64-bit word of
// `words`, which holds (keys + 3) / 4 of them), kept when the draw is at or above `threshold`.
inline void scale_and_drop_row(float* weights, int64_t keys, float scale, uint32_t threshold, uint64_t stream,
                               uint64_t* words) {
  if (threshold == 0) {
#pragma omp simd
    for (int64_t j = 0; j < keys; ++j) weights[j] *= scale;
    return;
  }
  const int64_t count = (keys + 3) / 4;
  for (int64_t c = 0; c < count; ++c) words[c] = splitmix64(stream + static_cast<uint64_t>(c) * 0x9e3779b97f4a7c15ULL);
  const uint16_t* draws = reinterpret_cast<const uint16_t*>(words);  // little-endian: key j is bits 16 * (j % 4)
#pragma omp simd
  for (int64_t j = 0; j < keys; ++j) weights[j] = draws[j] >= threshold ? weights[j] * scale : 0.0f;
}

// One row forward: `out` (keys values) = dropout(softmax(scores + mask)) with keep probability `keep`.
// `mask` may be null; `words` holds keys / 4 + 1 values.
inline void softmax_dropout_row(const float* scores, const float* mask, int64_t keys, float keep, uint32_t threshold,
                                uint64_t stream, float* out, uint64_t* words) {
  const float inverse_total = softmax_row(scores, mask, keys, out);
  scale_and_drop_row(out, keys, inverse_total / keep, threshold, stream, words);
}

// One row backward: `grad_in` (keys values) from the output gradient, the forward output and the scores
// (+ mask, which may be null). `grad_in` may not alias the inputs.
inline void softmax_dropout_grad_row(const float* grad, const float* out, const float* scores, const float* mask,
                                     int64_t keys, float* grad_in) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < keys; ++j) dot += grad[j] * out[j];
  const float scale = softmax_row(scores, mask, keys, grad_in) * dot;
#pragma omp simd
  for (int64_t j = 0; j < keys; ++j) grad_in[j] = grad[j] * out[j] - grad_in[j] * scale;
}

}  // namespace bench_native
