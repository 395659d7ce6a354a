// CPU training kernels of the MXNet backend: the self-attention's masked softmax + dropout in one pass
// (its row arithmetic is bench/run/native/softmax_dropout.h, shared with the torch backend), and LayerNorm.
//
// Built and loaded by bench/backends/mxnet/cpu_kernels.py through MXNet 1.9's operator-library API
// (mx.library.load, include/mxnet/lib_api.h). Why: MXNet's own graph for the attention probabilities of
// a training step (add a key-padding mask, softmax, Dropout) spends most of its time drawing one
// Mersenne-Twister number per element for dropout and in a generic softmax backward, and its LayerNorm
// backward runs generic reductions (docs/mxnet.md, "Speed").
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
#include "softmax_dropout.h"

using namespace mxnet::ext;
using namespace bench_native;

namespace {

struct Attrs {
  int64_t heads;
  float p;
  int threads;
};

Attrs read_attrs(const std::unordered_map<std::string, std::string>& attrs) {
  return Attrs{std::stoll(attrs.at("heads")), std::stof(attrs.at("p")), std::stoi(attrs.at("threads"))};
}

// Keys of row `row` that are not padding: [0, length). A window with no valid key attends to all.
inline int64_t valid_keys(const float* valid_length, int64_t row, int64_t length, int64_t heads) {
  const int64_t window = row / length / heads;
  const int64_t keys = static_cast<int64_t>(valid_length[window]);
  return (keys <= 0 || keys > length) ? length : keys;
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
  const uint32_t threshold = dropout_threshold(a.p);
  // Rows are computed in a per-thread buffer, so the result is right even where MXNet runs the op in place.
#pragma omp parallel num_threads(a.threads)
  {
    std::vector<float> weights(length);
    std::vector<uint64_t> words(length / 4 + 1);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t keys = valid_keys(valid_length, row, length, a.heads);
      softmax_dropout_row(in + row * length, nullptr, keys, keep, threshold, row_stream(seed, row), weights.data(),
                          words.data());
      float* result = out + row * length;
      std::memcpy(result, weights.data(), keys * sizeof(float));
      for (int64_t j = keys; j < length; ++j) result[j] = 0.0f;
    }
  }
  return MX_SUCCESS;
}

// The gradient needs the output and the recomputed softmax, never the mask (softmax_dropout.h).
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
    std::vector<float> weights(length);  // the row's gradient: the output may alias an input
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t keys = valid_keys(valid_length, row, length, a.heads), offset = row * length;
      softmax_dropout_grad_row(grad + offset, out + offset, in + offset, nullptr, keys, weights.data());
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
