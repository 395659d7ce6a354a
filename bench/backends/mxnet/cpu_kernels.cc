// CPU training kernel of the MXNet backend's self-attention: masked softmax + dropout in one pass.
//
// Built and loaded by bench/backends/mxnet/cpu_kernels.py through MXNet 1.9's operator-library API
// (mx.library.load, include/mxnet/lib_api.h). Why it exists: MXNet's own graph for the attention
// probabilities of a training step (add a key-padding mask, softmax, Dropout) spends most of its time
// drawing one Mersenne-Twister number per element for dropout and in a generic softmax backward
// (docs/mxnet.md, "Speed"). This op reads the scores once, writes the dropped probabilities once, and
// keeps no mask: the backward needs only the output and the recomputed softmax (see backward()).
//
// Operator bench_masked_softmax_dropout
//   inputs : scores (B * heads, L, L) float32, valid_length (B,) float32 (keys j >= valid_length are padding)
//   attrs  : heads (int), p (dropout probability, 0 <= p < 1), threads (OpenMP threads)
//   output : (B * heads, L, L) float32: softmax over the valid keys, each kept with probability 1 - p and
//            scaled by 1 / (1 - p); exactly 0 for padded keys and dropped ones.
// It is used in training graphs only (the evaluation graphs keep MXNet's softmax): the API gives the
// compute function no training flag, so the Python side chooses the graph.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

struct Attrs {
  int64_t heads;
  float p;
  int threads;
};

Attrs read_attrs(const std::unordered_map<std::string, std::string>& attrs) {
  return Attrs{std::stoll(attrs.at("heads")), std::stof(attrs.at("p")), std::stoi(attrs.at("threads"))};
}

// exp(x) for x <= 0 (scores minus their row maximum), Cephes' single-precision polynomial after
// range reduction: relative error about 2e-7, and written so that the compiler vectorizes the loops.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;  // below this 2^k leaves the normal floats; the weight is ~1e-38 anyway
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
  return mantissa * scale;
}

// splitmix64: a counter-based generator, so each row's draws depend only on (seed, row): the result
// does not depend on the thread count.
inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Keys of row `row` that are not padding: [0, length). A window with no valid key attends to all.
inline int64_t valid_keys(const float* valid_length, int64_t row, int64_t length, int64_t heads) {
  const int64_t window = row / length / heads;
  const int64_t keys = static_cast<int64_t>(valid_length[window]);
  return (keys <= 0 || keys > length) ? length : keys;
}

// Writes exp(s_j - max) for j < keys into `weights` and returns 1 / their sum.
inline float softmax_row(const float* scores, int64_t keys, float* weights) {
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

// Scales the row's weights by `scale` and drops some: one 16-bit draw per key (four per 64-bit word of
// `words`, which holds (keys + 3) / 4 of them), kept when the draw is at or above p * 65536 (so p is
// honoured to 1/65536). Both loops vectorize.
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

MXReturnValue forward(const std::unordered_map<std::string, std::string>& attrs, std::vector<MXTensor>* inputs,
                      std::vector<MXTensor>* outputs, const OpResource& res) {
  const Attrs a = read_attrs(attrs);
  const MXTensor& scores = inputs->at(0);
  const int64_t rows = scores.shape[0] * scores.shape[1], length = scores.shape[2];
  const float* in = inputs->at(0).data<float>();
  const float* valid_length = inputs->at(1).data<float>();
  float* out = outputs->at(0).data<float>();
  // One 64-bit seed per call from MXNet's seeded generator: mx.random.seed makes the masks repeat.
  std::mt19937* generator = res.get_cpu_rand_states();
  const uint64_t seed = (static_cast<uint64_t>((*generator)()) << 32) | (*generator)();
  const float keep = 1.0f - a.p;
  const uint32_t threshold = static_cast<uint32_t>(std::lround(a.p * 65536.0f));
  // Rows are computed in a per-thread buffer, so the result is right even where MXNet runs the op in place.
#pragma omp parallel num_threads(a.threads)
  {
    std::vector<float> weights(length);
    std::vector<uint64_t> words(length / 4 + 1);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t keys = valid_keys(valid_length, row, length, a.heads);
      const float inverse_total = softmax_row(in + row * length, keys, weights.data());
      const uint64_t stream = splitmix64(seed ^ static_cast<uint64_t>(row));
      scale_and_drop_row(weights.data(), keys, inverse_total / keep, threshold, stream, words.data());
      float* result = out + row * length;
      std::memcpy(result, weights.data(), keys * sizeof(float));
      for (int64_t j = keys; j < length; ++j) result[j] = 0.0f;
    }
  }
  return MX_SUCCESS;
}

// With y the softmax, m the keep mask and d = y * m / keep the output, the gradient of the scores is
//   dx_i = y_i * (g_i * m_i / keep - sum_j g_j * m_j / keep * y_j) = g_i * d_i - y_i * sum_j g_j * d_j,
// which needs the output d and y (recomputed from the scores), never the mask.
// inputs: [output gradient, scores, valid_length, output]; outputs: [scores gradient, valid_length gradient]
MXReturnValue backward(const std::unordered_map<std::string, std::string>& attrs, std::vector<MXTensor>* inputs,
                       std::vector<MXTensor>* outputs, const OpResource& res) {
  const Attrs a = read_attrs(attrs);
  const MXTensor& scores = inputs->at(1);
  const int64_t rows = scores.shape[0] * scores.shape[1], length = scores.shape[2];
  const float* grad = inputs->at(0).data<float>();
  const float* in = inputs->at(1).data<float>();
  const float* valid_length = inputs->at(2).data<float>();
  const float* out = inputs->at(3).data<float>();
  float* grad_in = outputs->at(0).data<float>();
  float* grad_length = outputs->at(1).data<float>();
  for (int64_t i = 0; i < outputs->at(1).size(); ++i) grad_length[i] = 0.0f;
#pragma omp parallel num_threads(a.threads)
  {
    std::vector<float> weights(length);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t keys = valid_keys(valid_length, row, length, a.heads), offset = row * length;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < keys; ++j) dot += grad[offset + j] * out[offset + j];
      const float scale = softmax_row(in + offset, keys, weights.data()) * dot;
      for (int64_t j = 0; j < keys; ++j) weights[j] = grad[offset + j] * out[offset + j] - weights[j] * scale;
      float* result = grad_in + offset;
      std::memcpy(result, weights.data(), keys * sizeof(float));
      for (int64_t j = keys; j < length; ++j) result[j] = 0.0f;
    }
  }
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in, int* num_out) {
  for (const char* name : {"heads", "p", "threads"}) {
    if (attrs.count(name) == 0) {
      MX_ERROR_MSG << "bench_masked_softmax_dropout needs the attribute '" << name << "'";
      return MX_FAIL;
    }
  }
  const Attrs a = read_attrs(attrs);
  if (a.heads < 1 || a.p < 0.0f || a.p >= 1.0f || a.threads < 1) {
    MX_ERROR_MSG << "bench_masked_softmax_dropout: heads >= 1, 0 <= p < 1 and threads >= 1 are required";
    return MX_FAIL;
  }
  *num_in = 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const std::unordered_map<std::string, std::string>& attrs, std::vector<int>* in_types,
                         std::vector<int>* out_types) {
  if (in_types->at(0) != kFloat32 || in_types->at(1) != kFloat32) {
    MX_ERROR_MSG << "bench_masked_softmax_dropout takes float32 scores and valid lengths";
    return MX_FAIL;
  }
  out_types->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                          std::vector<std::vector<unsigned int>>* in_shapes,
                          std::vector<std::vector<unsigned int>>* out_shapes) {
  const std::vector<unsigned int>& scores = in_shapes->at(0);
  const std::vector<unsigned int>& lengths = in_shapes->at(1);
  const int64_t heads = read_attrs(attrs).heads;
  if (scores.size() != 3 || scores[1] != scores[2] || lengths.size() != 1 ||
      static_cast<int64_t>(scores[0]) != static_cast<int64_t>(lengths[0]) * heads) {
    MX_ERROR_MSG << "bench_masked_softmax_dropout wants scores (B * heads, L, L) and valid_length (B,)";
    return MX_FAIL;
  }
  out_shapes->at(0) = scores;
  return MX_SUCCESS;
}


// ---------------------------------------------------------------------------------------- LayerNorm
// Operator bench_layer_norm: MXNet's LayerNorm over the last axis (same arithmetic: mean, then the mean
// of squared deviations), whose backward MXNet runs through generic reductions (about 19 ms for a
// (3072, 384) input on 2 threads, 15x its forward). The backward recomputes each row's mean and
// deviation instead of storing them, and sums gamma's and beta's gradients per thread, then in thread
// order. The gradients are written, never added: MXNet's library API passes no gradient request, so
// the Python side feeds gamma and beta through a copy, whose own backward adds where asked.
//   inputs : data (..., H), gamma (H,), beta (H,) float32;  attrs: eps, threads;  output: (..., H)

struct NormAttrs {
  float eps;
  int threads;
};

NormAttrs read_norm_attrs(const std::unordered_map<std::string, std::string>& attrs) {
  return NormAttrs{std::stof(attrs.at("eps")), std::stoi(attrs.at("threads"))};
}

// Mean and 1 / sqrt(variance + eps) of one row.
inline void row_moments(const float* x, int64_t width, float eps, float* mean, float* inverse_std) {
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < width; ++j) total += x[j];
  const float mu = total / static_cast<float>(width);
  float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
  for (int64_t j = 0; j < width; ++j) squares += (x[j] - mu) * (x[j] - mu);
  *mean = mu;
  *inverse_std = 1.0f / std::sqrt(squares / static_cast<float>(width) + eps);
}

MXReturnValue norm_forward(const std::unordered_map<std::string, std::string>& attrs, std::vector<MXTensor>* inputs,
                           std::vector<MXTensor>* outputs, const OpResource& res) {
  const NormAttrs a = read_norm_attrs(attrs);
  const MXTensor& data = inputs->at(0);
  const int64_t width = data.shape.back(), rows = data.size() / width;
  const float* x = inputs->at(0).data<float>();
  const float* gamma = inputs->at(1).data<float>();
  const float* beta = inputs->at(2).data<float>();
  float* y = outputs->at(0).data<float>();
#pragma omp parallel for num_threads(a.threads) schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* in = x + row * width;
    float mean, inverse_std;
    row_moments(in, width, a.eps, &mean, &inverse_std);
    float* out = y + row * width;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) out[j] = (in[j] - mean) * inverse_std * gamma[j] + beta[j];
  }
  return MX_SUCCESS;
}

// With n = (x - mean) * inverse_std and h = dy * gamma:
//   dx = inverse_std * (h - mean(h) - n * mean(h * n)),  dgamma = sum over rows of dy * n,  dbeta = sum of dy.
// inputs: [output gradient, data, gamma, beta, output]; outputs: [data, gamma, beta gradients]
MXReturnValue norm_backward(const std::unordered_map<std::string, std::string>& attrs,
                            std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs, const OpResource& res) {
  const NormAttrs a = read_norm_attrs(attrs);
  const MXTensor& data = inputs->at(1);
  const int64_t width = data.shape.back(), rows = data.size() / width;
  const float* dy = inputs->at(0).data<float>();
  const float* x = inputs->at(1).data<float>();
  const float* gamma = inputs->at(2).data<float>();
  float* dx = outputs->at(0).data<float>();
  std::vector<std::vector<float>> partial(a.threads, std::vector<float>(2 * width, 0.0f));
#pragma omp parallel num_threads(a.threads)
  {
    float* sums = partial[omp_get_thread_num()].data();  // [dgamma | dbeta] of this thread's rows
    std::vector<float> normalized(width), scaled(width);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const float* in = x + row * width;
      const float* grad = dy + row * width;
      float mean, inverse_std;
      row_moments(in, width, a.eps, &mean, &inverse_std);
      float scaled_total = 0.0f, product_total = 0.0f;
#pragma omp simd reduction(+ : scaled_total, product_total)
      for (int64_t j = 0; j < width; ++j) {
        normalized[j] = (in[j] - mean) * inverse_std;
        scaled[j] = grad[j] * gamma[j];
        scaled_total += scaled[j];
        product_total += scaled[j] * normalized[j];
        sums[j] += grad[j] * normalized[j];
        sums[width + j] += grad[j];
      }
      const float scaled_mean = scaled_total / static_cast<float>(width);
      const float product_mean = product_total / static_cast<float>(width);
      float* out = dx + row * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j)
        out[j] = inverse_std * (scaled[j] - scaled_mean - normalized[j] * product_mean);
    }
  }
  float* dgamma = outputs->at(1).data<float>();
  float* dbeta = outputs->at(2).data<float>();
  for (int64_t j = 0; j < width; ++j) dgamma[j] = dbeta[j] = 0.0f;
  for (const std::vector<float>& sums : partial) {
    for (int64_t j = 0; j < width; ++j) {
      dgamma[j] += sums[j];
      dbeta[j] += sums[width + j];
    }
  }
  return MX_SUCCESS;
}

MXReturnValue norm_parse_attrs(const std::unordered_map<std::string, std::string>& attrs, int* num_in,
                               int* num_out) {
  if (attrs.count("eps") == 0 || attrs.count("threads") == 0) {
    MX_ERROR_MSG << "bench_layer_norm needs the attributes 'eps' and 'threads'";
    return MX_FAIL;
  }
  const NormAttrs a = read_norm_attrs(attrs);
  if (!(a.eps > 0.0f) || a.threads < 1) {
    MX_ERROR_MSG << "bench_layer_norm: eps > 0 and threads >= 1 are required";
    return MX_FAIL;
  }
  *num_in = 3;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue norm_infer_type(const std::unordered_map<std::string, std::string>& attrs, std::vector<int>* in_types,
                              std::vector<int>* out_types) {
  for (int type : *in_types) {
    if (type != kFloat32) {
      MX_ERROR_MSG << "bench_layer_norm takes float32 data, gamma and beta";
      return MX_FAIL;
    }
  }
  out_types->at(0) = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue norm_infer_shape(const std::unordered_map<std::string, std::string>& attrs,
                               std::vector<std::vector<unsigned int>>* in_shapes,
                               std::vector<std::vector<unsigned int>>* out_shapes) {
  const std::vector<unsigned int>& data = in_shapes->at(0);
  if (data.empty() || in_shapes->at(1) != std::vector<unsigned int>{data.back()} ||
      in_shapes->at(2) != std::vector<unsigned int>{data.back()}) {
    MX_ERROR_MSG << "bench_layer_norm wants data (..., H), gamma (H,) and beta (H,)";
    return MX_FAIL;
  }
  out_shapes->at(0) = data;
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(bench_masked_softmax_dropout)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape);

REGISTER_OP(bench_layer_norm)
    .setForward(norm_forward, "cpu")
    .setBackward(norm_backward, "cpu")
    .setParseAttrs(norm_parse_attrs)
    .setInferType(norm_infer_type)
    .setInferShape(norm_infer_shape);

MXReturnValue initialize(int version) {
  return version >= 10900 ? MX_SUCCESS : MX_FAIL;
}
