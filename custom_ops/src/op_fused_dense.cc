// FusedDense (domain waveopt.ops, version 1): Y = act(concat(x_1, ..., x_m) · W + b).
//
// Inputs (float32, one variadic list because ORT allows only the last input to be variadic):
//   x_1 [..., K_1], ..., x_m [..., K_m] (same leading dims), then W [K_1 + ... + K_m, N], then b [N].
// Attribute activation: "none" | "relu" | "tanh" | "sigmoid". Output Y [..., N].
// W is split into one packed block per x_i (no concat is ever materialised): Y = x_1·W_1 + b,
// then Y += x_i·W_i, the activation fused into the last block. W is packed when the kernel is
// created if it is a constant initializer, else at the start of each Compute.
// Attribute quant "none" (default) | "int8" | "int16": integer products (kernels.h), W
// quantized per output column when packed, each x_i row quantized at every call with its own
// scale (largest |x| of the row: no calibration needed, nothing clipped).
// Bad input: N = 0 (W [K, 0]) is an error (a layer with no outputs is a broken model), as are
// non-finite weights with quant int8/int16 (they have no integer form). A row of x holding a
// NaN gives a row of NaN in Y, as x·W + b does in IEEE arithmetic (numpy), whatever the
// activation and precision (the kernels' relu/tanh/sigmoid and the quantizer would otherwise
// turn NaN into numbers); infinities are not treated specially.
// Threads: the kernel's team (see thread_team.h; "waveopt.threads") splits the rows of x into
// one contiguous range per member when there are at least 16 per member, else the output
// columns (whole 16-column panels); either way each output element is computed by one member
// with the same kernel and summation order, so Y is bit-identical for any thread count.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dispatch.h"
#include "linear.h"
#include "ort_util.h"
#include "pack.h"

namespace waveopt {
namespace {

constexpr size_t kRowChunk = 64;  // rows per GEMM call: a chunk's weights stay in cache
constexpr int64_t kMinRowsPerMember = 16;  // fewer rows: members split the columns instead

using Blocks = std::vector<std::unique_ptr<Linear>>;

struct DenseKernel {
  int act = WAVEOPT_ACT_NONE;
  const WaveoptKernels* kernels = nullptr;
  std::vector<int64_t> packed_splits;  // K_i the constant W was packed for
  Blocks packed;
  const float* packed_source = nullptr;
  int bits = 0;
  std::unique_ptr<ThreadTeam> team;
};

bool parse_activation(const std::string& name, int* act) {
  if (name == "none") *act = WAVEOPT_ACT_NONE;
  else if (name == "relu") *act = WAVEOPT_ACT_RELU;
  else if (name == "tanh") *act = WAVEOPT_ACT_TANH;
  else if (name == "sigmoid") *act = WAVEOPT_ACT_SIGMOID;
  else return false;
  return true;
}

// W [sum K, N] split into row blocks of K_i rows, each packed as an N × K_i matrix (float32,
// or quantized when bits is 8 or 16).
OrtStatus* pack_blocks(const float* w, int64_t n, const std::vector<int64_t>& splits, int bits, Blocks* out) {
  out->clear();
  int64_t row = 0;
  for (size_t i = 0; i < splits.size(); ++i) {
    const int64_t k = splits[i];
    // A [k, n] block of a row-major [sum K, n] matrix is itself row-major [k, n].
    out->push_back(std::make_unique<Linear>());
    if (k > 0) {
      const std::string error = out->back()->pack(w + row * n, n, k, true, 1, nullptr, bits);
      if (!error.empty())
        return make_error("FusedDense: W (rows " + std::to_string(row) + ".." + std::to_string(row + k) + ") " + error,
                          error.find("out of memory") != std::string::npos ? ORT_FAIL : ORT_INVALID_ARGUMENT);
    }
    row += k;
  }
  return nullptr;
}

// Quantizes `rows` rows of x [rows, k] for `w`, each row with scale max|x| / levels.
void quantize_rows(const WaveoptKernels* kernels, const WaveoptPackedQ* w, const float* x, size_t rows,
                   float* inv_scale, float* scale, void* xq) {
  const int64_t k = w->k;
  const float levels = w->bits == 8 ? 127.0f : static_cast<float>(WAVEOPT_Q16_MAX);
  for (size_t r = 0; r < rows; ++r) {
    float m = 0.0f;
    for (int64_t c = 0; c < k; ++c) m = std::fabs(x[r * k + c]) > m ? std::fabs(x[r * k + c]) : m;
    inv_scale[r] = m > 0.0f && std::isfinite(m) ? levels / m : 1.0f;
    scale[r] = m > 0.0f && std::isfinite(m) ? m / levels : 1.0f;
  }
  if (w->bits == 8)
    kernels->quantize(x, static_cast<size_t>(k), rows, static_cast<size_t>(k), static_cast<size_t>(w->k_pad),
                      inv_scale, 128, 1, 255, 8, xq, static_cast<size_t>(w->k_pad));
  else
    kernels->quantize(x, static_cast<size_t>(k), rows, static_cast<size_t>(k), static_cast<size_t>(w->k_pad),
                      inv_scale, 0, -WAVEOPT_Q16_MAX, WAVEOPT_Q16_MAX, 16, xq, static_cast<size_t>(w->k_pad));
}

std::string no_outputs(const std::vector<int64_t>& w_shape) {
  return "FusedDense: W is " + shape_string(w_shape) + ": no output columns (N = 0)";
}

// Whether row `r` of any x_i holds a NaN.
bool row_has_nan(const std::vector<TensorView>& x, const std::vector<int64_t>& splits, int64_t r) {
  for (size_t i = 0; i < x.size(); ++i) {
    const float* row = x[i].data + r * splits[i];
    for (int64_t c = 0; c < splits[i]; ++c)
      if (row[c] != row[c]) return true;
  }
  return false;
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info, void** kernel) {
  const Dispatch& dispatch_info = dispatch();
  if (!dispatch_info.kernels) return make_error(dispatch_info.error, ORT_FAIL);
  auto k = std::make_unique<DenseKernel>();
  k->kernels = dispatch_info.kernels;
  const std::string act = attribute_string(info, "activation", "none");
  if (!parse_activation(act, &k->act))
    return make_error("FusedDense: activation must be none, relu, tanh or sigmoid, got '" + act + "'");
  const std::string quant = attribute_string(info, "quant", "none");
  if (quant == "int8" || quant == "int16") k->bits = quant == "int8" ? 8 : 16;
  else if (quant != "none")
    return make_error("FusedDense: attribute quant must be 'none', 'int8' or 'int16', got '" + quant + "'");
  // Constant W: pack now, for the K_i split the input types declare (if known).
  size_t count = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelInfo_GetInputCount(info, &count));
  if (count < 3) return make_error("FusedDense: needs at least x, W and b, got " + std::to_string(count) + " inputs");
  TensorView w;
  bool constant = false;
  WAVEOPT_RETURN_IF_ERROR(constant_input(info, count - 2, &w, &constant));
  if (constant && w.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && w.shape.size() == 2 && w.shape[1] == 0)
    return make_error(no_outputs(w.shape));
  if (constant && w.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && w.shape.size() == 2) {
    std::vector<int64_t> splits;
    bool known = true;
    for (size_t i = 0; i + 2 < count && known; ++i) {
      OrtTypeInfo* type_info = nullptr;
      OrtStatus* status = g_api->KernelInfo_GetInputTypeInfo(info, i, &type_info);
      if (status) {
        g_api->ReleaseStatus(status);
        known = false;
        break;
      }
      const OrtTensorTypeAndShapeInfo* tensor_info = nullptr;
      size_t rank = 0;
      status = g_api->CastTypeInfoToTensorInfo(type_info, &tensor_info);
      if (!status && tensor_info) status = g_api->GetDimensionsCount(tensor_info, &rank);
      std::vector<int64_t> dims(rank);
      if (!status && tensor_info && rank) status = g_api->GetDimensions(tensor_info, dims.data(), rank);
      if (status) g_api->ReleaseStatus(status);
      g_api->ReleaseTypeInfo(type_info);
      if (status || !tensor_info || rank == 0 || dims.back() <= 0) known = false;
      else splits.push_back(dims.back());
    }
    int64_t total = 0;
    for (int64_t s : splits) total += s;
    if (known && total == w.shape[0]) {
      WAVEOPT_RETURN_IF_ERROR(pack_blocks(w.data, w.shape[1], splits, k->bits, &k->packed));
      k->packed_splits = splits;
      k->packed_source = w.data;
    }
  }
  TeamSettings settings;
  WAVEOPT_RETURN_IF_ERROR(kernel_team_settings(op, info, &settings));
  k->team = std::make_unique<ThreadTeam>(settings.threads, settings.pin == 1);  // last: nothing fails after
  k->team->set_adaptive(settings.adaptive == 1);
  *kernel = k.release();
  return nullptr;
}

OrtStatus* ORT_API_CALL compute(void* kernel_ptr, OrtKernelContext* context) {
  const DenseKernel& k = *static_cast<const DenseKernel*>(kernel_ptr);
  size_t count = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(context, &count));
  if (count < 3) return make_error("FusedDense: needs at least x, W and b, got " + std::to_string(count) + " inputs");
  const size_t m = count - 2;
  std::vector<TensorView> x(m);
  TensorView w, b;
  for (size_t i = 0; i < m; ++i) WAVEOPT_RETURN_IF_ERROR(context_input(context, i, &x[i]));
  WAVEOPT_RETURN_IF_ERROR(context_input(context, m, &w));
  WAVEOPT_RETURN_IF_ERROR(context_input(context, m + 1, &b));
  if (w.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || w.shape.size() != 2)
    return make_error("FusedDense: W must be float32 [sum K_i, N], got " + shape_string(w.shape));
  const int64_t n = w.shape[1];
  if (n == 0) return make_error(no_outputs(w.shape));
  if (b.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || b.shape != std::vector<int64_t>{n})
    return make_error("FusedDense: b must be float32 [" + std::to_string(n) + "], got " + shape_string(b.shape));
  std::vector<int64_t> lead, splits;
  int64_t total_k = 0;
  for (size_t i = 0; i < m; ++i) {
    const auto& s = x[i].shape;
    if (x[i].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || s.empty())
      return make_error("FusedDense: input " + std::to_string(i) + " must be a float32 tensor [..., K], got " +
                        shape_string(s));
    std::vector<int64_t> this_lead(s.begin(), s.end() - 1);
    if (i == 0) lead = this_lead;
    else if (this_lead != lead)
      return make_error("FusedDense: inputs 0 and " + std::to_string(i) + " differ in their leading dims: " +
                        shape_string(x[0].shape) + " vs " + shape_string(s));
    splits.push_back(s.back());
    total_k += s.back();
  }
  if (total_k != w.shape[0])
    return make_error("FusedDense: W has " + std::to_string(w.shape[0]) + " rows but the inputs have " +
                      std::to_string(total_k) + " features in all");
  int64_t rows = 1;
  for (int64_t d : lead) rows *= d;

  std::vector<int64_t> out_shape = lead;
  out_shape.push_back(n);
  OrtValue* output = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetOutput(context, 0, out_shape.data(), out_shape.size(), &output));
  void* out_data = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->GetTensorMutableData(output, &out_data));
  float* y = static_cast<float*>(out_data);
  if (rows == 0 || n == 0) return nullptr;

  const Blocks* blocks = &k.packed;
  Blocks local;
  if (k.packed.empty() || k.packed_source != w.data || k.packed_splits != splits) {
    WAVEOPT_RETURN_IF_ERROR(pack_blocks(w.data, n, splits, k.bits, &local));
    blocks = &local;
  }
  // The bias, padded to whole panels as the kernels read it; with quant, room for one chunk's
  // quantized rows (2 bytes each at most) and their scales per member.
  const int members = k.team->size();
  int64_t max_k = 0;
  for (int64_t s_i : splits) max_k = s_i > max_k ? s_i : max_k;
  const int64_t q_floats = k.bits ? round_up(static_cast<int64_t>(kRowChunk) * (round_up(max_k, 4) / 2 + 2), 16) : 0;
  const int64_t n_pad = round_up(n, WAVEOPT_PANEL);
  AlignedBuffer bias = aligned_floats(static_cast<size_t>(n_pad + members * q_floats));
  if (!bias) return make_error("FusedDense: out of memory", ORT_FAIL);
  for (int64_t j = 0; j < n; ++j) bias[j] = b.data[j];

  // Rows [rr) × column panels [pr) of Y, by one member with its own quantization scratch.
  auto tile = [&](Range rr, Range pr, float* q_scratch) {
    const int64_t c0 = pr.begin * WAVEOPT_PANEL, c1 = pr.end * WAVEOPT_PANEL < n ? pr.end * WAVEOPT_PANEL : n;
    if (rr.size() <= 0 || c1 <= c0) return;
    float* inv_scale = q_scratch;
    float* scale = inv_scale + kRowChunk;
    void* xq = scale + kRowChunk;
    for (int64_t r0 = rr.begin; r0 < rr.end; r0 += kRowChunk) {
      const size_t chunk = static_cast<size_t>(rr.end - r0 < static_cast<int64_t>(kRowChunk) ? rr.end - r0 : kRowChunk);
      float* y_chunk = y + r0 * n;
      for (size_t i = 0; i < m; ++i) {
        const int act = i + 1 == m ? k.act : WAVEOPT_ACT_NONE;
        if (splits[i] == 0) {  // an empty block contributes nothing (but may carry bias and act)
          for (size_t r = 0; r < chunk; ++r) {
            if (i == 0)
              for (int64_t j = c0; j < c1; ++j) y_chunk[r * n + j] = bias[j];
            if (act != WAVEOPT_ACT_NONE) k.kernels->activate(y_chunk + r * n + c0, static_cast<size_t>(c1 - c0), act);
          }
          continue;
        }
        const Linear& block = *(*blocks)[i];
        StepVector xv;
        const float* xi = x[i].data + r0 * splits[i];
        if (k.bits) {
          quantize_rows(k.kernels, block.quant_view(), xi, chunk, inv_scale, scale, xq);
          xv.q.q = xq;
          xv.q.ld = static_cast<size_t>(block.k_pad());
          xv.q.scale = scale;
          xv.q.zero = k.bits == 8 ? 128 : 0;
        } else {
          xv.f = const_cast<float*>(xi);  // only read
          xv.ld = static_cast<size_t>(splits[i]);
        }
        // Blocks after the first accumulate into Y (read and written per element, in place).
        block.compute(k.kernels, xv, chunk, pr, i == 0 ? nullptr : y_chunk, static_cast<size_t>(n), nullptr, nullptr,
                      act, y_chunk, static_cast<size_t>(n), i == 0 ? bias.get() : nullptr);
      }
      for (size_t r = 0; r < chunk; ++r)
        if (row_has_nan(x, splits, r0 + static_cast<int64_t>(r)))
          for (int64_t j = c0; j < c1; ++j) y_chunk[r * n + j] = std::numeric_limits<float>::quiet_NaN();
    }
  };
  float* q_base = bias.get() + n_pad;
  const Range all_rows{0, rows}, all_panels{0, n_pad / WAVEOPT_PANEL};
  const bool split_rows = rows >= kMinRowsPerMember * members;
  k.team->run([&](const Crew& crew) {
    float* mine = q_base + crew.member() * q_floats;
    if (split_rows || crew.members() == 1)
      tile(crew.share(rows), all_panels, mine);
    else
      tile(all_rows, crew.share(all_panels.end), mine);
  });
  return nullptr;
}

void ORT_API_CALL destroy(void* kernel) { delete static_cast<DenseKernel*>(kernel); }
const char* ORT_API_CALL name(const OrtCustomOp*) { return "FusedDense"; }
size_t ORT_API_CALL one_count(const OrtCustomOp*) { return 1; }
ONNXTensorElementDataType ORT_API_CALL float_type(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL variadic(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_VARIADIC;
}
int ORT_API_CALL min_inputs(const OrtCustomOp*) { return 3; }

}  // namespace

OrtCustomOp make_fused_dense_op() {
  OrtCustomOp op;
  init_custom_op(&op);
  op.GetName = name;
  op.GetInputTypeCount = one_count;
  op.GetOutputTypeCount = one_count;
  op.GetInputType = float_type;
  op.GetOutputType = float_type;
  op.GetInputCharacteristic = variadic;
  op.GetVariadicInputMinArity = min_inputs;
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.KernelDestroy = destroy;
  return op;
}

}  // namespace waveopt
