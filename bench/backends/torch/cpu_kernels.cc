// CPU training kernel of the torch backend's attention: softmax(scores + mask) then dropout, forward and
// backward, in one pass each (the row arithmetic is bench/run/native/softmax_dropout.h, shared with the
// MXNet backend). A C ABI called through ctypes by bench/backends/torch/cpu_kernels.py, so it needs no
// torch headers and builds in seconds; it runs its own threads (std::thread), never a second OpenMP
// runtime beside torch's.
//
// Tensors are contiguous (batch, heads, queries, keys), float32 (dtype 0) or bfloat16 (dtype 1; computed
// in float32, rounded to nearest even on the way out). The additive float32 mask is optional (null) and
// read as mask[b * mask_batch + h * mask_head + q * mask_query + k]: strides of 0 broadcast it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "softmax_dropout.h"

using namespace bench_native;

namespace {

struct Shape {
  int64_t batch, heads, queries, keys;
  int64_t rows() const { return batch * heads * queries; }
};

struct Mask {
  const float* values;
  int64_t batch_stride, head_stride, query_stride;

  const float* row(const Shape& shape, int64_t row) const {
    const int64_t query = row % shape.queries, head = row / shape.queries % shape.heads;
    const int64_t batch = row / shape.queries / shape.heads;
    return values + batch * batch_stride + head * head_stride + query * query_stride;
  }
};

inline float bf16_to_float(uint16_t value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

inline uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

// Row `row` of a tensor of `dtype` as floats: float32 rows in place, bfloat16 rows converted into `buffer`.
const float* float_row(const void* tensor, int dtype, int64_t row, int64_t width, float* buffer) {
  if (dtype == 0) return static_cast<const float*>(tensor) + row * width;
  const uint16_t* in = static_cast<const uint16_t*>(tensor) + row * width;
  for (int64_t j = 0; j < width; ++j) buffer[j] = bf16_to_float(in[j]);
  return buffer;
}

void store_row(const float* values, int dtype, int64_t row, int64_t width, void* tensor) {
  if (dtype == 0) {
    std::memcpy(static_cast<float*>(tensor) + row * width, values, width * sizeof(float));
  } else {
    uint16_t* out = static_cast<uint16_t*>(tensor) + row * width;
    for (int64_t j = 0; j < width; ++j) out[j] = float_to_bf16(values[j]);
  }
}

// Runs body(first_row, end_row) on `threads` threads over contiguous blocks of rows.
template <typename Body>
void parallel_rows(int64_t rows, int threads, Body body) {
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads, rows));
  const int64_t block = (rows + count - 1) / count;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < count; ++t) pool.emplace_back(body, t * block, std::min(rows, (t + 1) * block));
  body(0, std::min(rows, block));
  for (std::thread& thread : pool) thread.join();
}

}  // namespace

extern "C" {

// out = dropout(softmax(scores + mask), p); the draws of row r come from row_stream(seed, r).
int bench_softmax_dropout_forward(const void* scores, void* out, int dtype, int64_t batch, int64_t heads,
                                  int64_t queries, int64_t keys, const float* mask, int64_t mask_batch,
                                  int64_t mask_head, int64_t mask_query, float p, uint64_t seed, int threads) {
  if ((dtype != 0 && dtype != 1) || keys < 1 || p < 0.0f || p >= 1.0f) return 1;
  const Shape shape{batch, heads, queries, keys};
  const Mask masks{mask, mask_batch, mask_head, mask_query};
  const uint32_t threshold = dropout_threshold(p);
  parallel_rows(shape.rows(), threads, [&](int64_t first, int64_t end) {
    std::vector<float> buffer(keys), weights(keys);
    std::vector<uint64_t> words(keys / 4 + 1);
    for (int64_t row = first; row < end; ++row) {
      softmax_dropout_row(float_row(scores, dtype, row, keys, buffer.data()), mask ? masks.row(shape, row) : nullptr,
                          keys, 1.0f - p, threshold, row_stream(seed, row), weights.data(), words.data());
      store_row(weights.data(), dtype, row, keys, out);
    }
  });
  return 0;
}

// grad_scores from the output gradient, the forward output and the scores (+ mask).
int bench_softmax_dropout_backward(const void* grad, const void* out, const void* scores, void* grad_scores,
                                   int dtype, int64_t batch, int64_t heads, int64_t queries, int64_t keys,
                                   const float* mask, int64_t mask_batch, int64_t mask_head, int64_t mask_query,
                                   int threads) {
  if ((dtype != 0 && dtype != 1) || keys < 1) return 1;
  const Shape shape{batch, heads, queries, keys};
  const Mask masks{mask, mask_batch, mask_head, mask_query};
  parallel_rows(shape.rows(), threads, [&](int64_t first, int64_t end) {
    std::vector<float> grad_buffer(keys), out_buffer(keys), scores_buffer(keys), result(keys);
    for (int64_t row = first; row < end; ++row) {
      softmax_dropout_grad_row(float_row(grad, dtype, row, keys, grad_buffer.data()),
                               float_row(out, dtype, row, keys, out_buffer.data()),
                               float_row(scores, dtype, row, keys, scores_buffer.data()),
                               mask ? masks.row(shape, row) : nullptr, keys, result.data());
      store_row(result.data(), dtype, row, keys, grad_scores);
    }
  });
  return 0;
}

}  // extern "C"
