// WaveRNNLoop (domain waveopt.ops, version 1): the whole WaveRNN recurrence for T steps.
//
// Inputs (float32), with s_t the value fed back at step t:
//    0 gi1 [T, B, 3H]   rnn1 input pre-activations without the sample term (W_ih1·c_t + b_ih1)
//    1 gi2 [T, B, 3H]   rnn2 input pre-activations without the h1 and sample terms
//    2 f1  [T, B, F]    fc1 pre-activation without the (h1+h2) and sample terms
//    3 f2  [T, B, F]    fc2's aux part + bias
//    4 u1 [3H], 5 u2 [3H], 6 u3 [F]   multiplied by s_t and added to gi1, gi2, f1
//    7 W_hh1 [3H, H], 8 b_hh1 [3H], 9 W_x2 [3H, H], 10 W_hh2 [3H, H], 11 b_hh2 [3H]
//   12 W_fc1 [F, H], 13 W_fc2 [F, F], 14 W_fc3 [N, F], 15 b_fc3 [N]
//   16 noise [T, B, C] (teacher_forced=0) or prev_samples [T, B] (teacher_forced=1), with
//      C = 2 for sampler "inverse_cdf", 11 for "gumbel_max", 0 for "argmax" (wavernn_loop.h);
//      noise values must lie in the open interval (0, 1) (the samplers take the inverse CDF
//      at u, log(-log(u)) and the logistic log(u) - log(1 - u)): any other value (0, 1,
//      negative, > 1, NaN) is refused with an error naming the first one, not clamped (a
//      caller with such noise has a bug that clamping would hide)
//   17 x0 [B] (optional, free-running only): s_0; 0 when absent
// Attributes: mode "raw" | "mol" (N = 30), teacher_forced 0 | 1,
//   sampler "inverse_cdf" (default, RAW and MOL) | "argmax" (RAW) | "gumbel_max" (MOL): how a
//     free-running step samples (Sampler in wavernn_loop.h); teacher-forced runs ignore it,
//   quant "none" (default) | "int8" | "int16": integer matrix products (kernels.h; weights
//     quantized per row when packed, inputs every step, see LoopQuant in wavernn_loop.h),
//   act_ranges [2] floats (with quant): the largest relu(fc1) and relu(fc2) values to keep,
//     from calibration (waveopt's quantize step measures them with WAVEOPT_ACT_STATS).
// Output: samples [T, B] (the fed-back values), or logits [T, B, N] when teacher-forced.
// Step semantics: PyTorch GRUCell for rnn1 and rnn2, then relu(fc1), relu(fc2), fc3 and the
// reference sampler (models/wavernn.py); h1 = h2 = 0 at t = 0. Free-running, s_t is the sample
// of step t-1 (s_0 = x0 or 0); teacher-forced, s_t = prev_samples[t].
//
// Weights 7..15 are packed once when the kernel is created if they are constant
// initializers. Otherwise they are packed at the start of every Compute (into that call's
// own buffers, so concurrent runs never share mutable state): a repack reads the weights
// once, about what one of the T steps costs, while keying a cache on the data pointer would
// go stale when ORT or the caller reuses a buffer for new values.
//
// Stage timers (for `waveopt profile`): when the environment variable WAVEOPT_STAGE_TIMERS
// names a file at kernel creation, every Compute appends one JSON line to it:
//   {"node": "<node name>", "kernel": K, "steps": T, "batch": B, "seconds": {"rnn1": ..., ...}}
// (K numbers the timed kernels of the process in creation order). Unset: nothing is timed.
//
// Threads: each kernel has its own worker team (thread_team.h), started when the kernel is
// created with the session's "waveopt.threads" (else WAVEOPT_THREADS, else 1) members; the
// steps run on it as run_wavernn_loop describes, bit-identical for any thread count.
//
// Calibration: when WAVEOPT_ACT_STATS names a file at kernel creation, every Compute of a
// float32 loop appends {"node": "<node name>", "fc1_max": ..., "fc2_max": ...}: the largest
// relu(fc1) and relu(fc2) outputs of that run.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "dispatch.h"
#include "ort_util.h"
#include "wavernn_loop.h"

namespace waveopt {
namespace {

constexpr size_t kInputs = 18;
constexpr size_t kWeightFirst = 7, kWeightLast = 15;
const char* const kInputNames[kInputs] = {"gi1",   "gi2",   "f1",    "f2",    "u1",    "u2",
                                          "u3",    "W_hh1", "b_hh1", "W_x2",  "W_hh2", "b_hh2",
                                          "W_fc1", "W_fc2", "W_fc3", "b_fc3", "noise", "x0"};

struct LoopKernel {
  Sampling sampling;
  bool teacher = false;
  const WaveoptKernels* kernels = nullptr;
  // Packed at creation when every weight is a constant initializer.
  std::unique_ptr<LoopWeights> packed;
  LoopDims packed_dims;
  const float* packed_sources[kInputs] = {};
  // Stage timers: on when timer_path is not empty (WAVEOPT_STAGE_TIMERS at creation).
  std::string timer_path;
  std::string node_name;
  int64_t timer_kernel = 0;
  LoopQuant quant;
  std::string stats_path;  // WAVEOPT_ACT_STATS at creation (float32 loops only)
  std::unique_ptr<ThreadTeam> team;  // "waveopt.threads" members, started with the kernel
};

std::mutex g_timer_file_mutex;
std::atomic<int64_t> g_timed_kernels{0};

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// Appends the JSON line described at the top of this file (errors are ignored: timing is
// a diagnostic and must never fail the run).
void write_stage_times(const LoopKernel& k, const LoopDims& d, const LoopStageTimes& times) {
  std::string line = "{\"node\": " + json_string(k.node_name) + ", \"kernel\": " + std::to_string(k.timer_kernel) +
                     ", \"steps\": " + std::to_string(d.steps) + ", \"batch\": " + std::to_string(d.batch) +
                     ", \"seconds\": {";
  for (int i = 0; i < kLoopStages; ++i) {
    char value[40];
    std::snprintf(value, sizeof value, "%.9g", times.seconds[i]);
    line += std::string(i ? ", " : "") + "\"" + kLoopStageNames[i] + "\": " + value;
  }
  line += "}}\n";
  std::lock_guard<std::mutex> lock(g_timer_file_mutex);
  if (std::FILE* f = std::fopen(k.timer_path.c_str(), "a")) {
    std::fwrite(line.data(), 1, line.size(), f);
    std::fclose(f);
  }
}

void write_activation_stats(const LoopKernel& k, const LoopActivationStats& stats) {
  char line[512];
  std::snprintf(line, sizeof line, "{\"node\": %s, \"fc1_max\": %.9g, \"fc2_max\": %.9g}\n",
                json_string(k.node_name).c_str(), stats.fc1_max, stats.fc2_max);
  std::lock_guard<std::mutex> lock(g_timer_file_mutex);
  if (std::FILE* f = std::fopen(k.stats_path.c_str(), "a")) {
    std::fputs(line, f);
    std::fclose(f);
  }
}

OrtStatus* node_name(const OrtKernelInfo* info, std::string* out) {
  size_t size = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelInfo_GetNodeName(info, nullptr, &size));
  std::string name(size, '\0');
  if (size) WAVEOPT_RETURN_IF_ERROR(g_api->KernelInfo_GetNodeName(info, &name[0], &size));
  while (!name.empty() && name.back() == '\0') name.pop_back();
  *out = name;
  return nullptr;
}

std::string input_name(size_t i, bool teacher) {
  return i == 16 && teacher ? "prev_samples" : kInputNames[i];
}

OrtStatus* expect_shape(const TensorView& v, size_t i, bool teacher, const std::vector<int64_t>& want) {
  if (v.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return make_error("WaveRNNLoop: input " + std::to_string(i) + " (" + input_name(i, teacher) +
                      ") must be float32");
  if (v.shape != want)
    return make_error("WaveRNNLoop: input " + std::to_string(i) + " (" + input_name(i, teacher) + ") has shape " +
                      shape_string(v.shape) + ", expected " + shape_string(want));
  return nullptr;
}

// Dimensions from the weights: H from W_hh1 [3H, H], F from W_fc1 [F, H], N from W_fc3 [N, F].
OrtStatus* weight_dims(const TensorView* t, LoopDims* d, SampleMode mode, bool teacher) {
  for (size_t i = kWeightFirst; i <= kWeightLast; ++i)
    if (t[i].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      return make_error("WaveRNNLoop: input " + std::to_string(i) + " (" + kInputNames[i] + ") must be float32");
  const auto& whh1 = t[7].shape;
  if (whh1.size() != 2 || whh1[1] < 1 || whh1[0] != 3 * whh1[1])
    return make_error("WaveRNNLoop: W_hh1 must be [3H, H], got " + shape_string(whh1));
  d->hidden = whh1[1];
  const auto& wfc1 = t[12].shape;
  if (wfc1.size() != 2 || wfc1[0] < 1 || wfc1[1] != d->hidden)
    return make_error("WaveRNNLoop: W_fc1 must be [F, H] with H = " + std::to_string(d->hidden) + ", got " +
                      shape_string(wfc1));
  d->fc = wfc1[0];
  const auto& wfc3 = t[14].shape;
  if (wfc3.size() != 2 || wfc3[1] != d->fc || wfc3[0] < 2)
    return make_error("WaveRNNLoop: W_fc3 must be [N, F] with F = " + std::to_string(d->fc) + " and N >= 2, got " +
                      shape_string(wfc3));
  d->classes = wfc3[0];
  if (mode == SampleMode::kMol && d->classes != 3 * kMolMixtures)
    return make_error("WaveRNNLoop: mode 'mol' needs N = 30 logits, W_fc3 is " + shape_string(wfc3));
  const int64_t H = d->hidden, F = d->fc, N = d->classes;
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[8], 8, teacher, {3 * H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[9], 9, teacher, {3 * H, H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[10], 10, teacher, {3 * H, H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[11], 11, teacher, {3 * H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[13], 13, teacher, {F, F}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[15], 15, teacher, {N}));
  return nullptr;
}

// noise [T, B, C] must be in (0, 1): NaN fails both comparisons.
OrtStatus* check_noise(const float* noise, int64_t T, int64_t B, int64_t C) {
  for (int64_t i = 0; i < T * B * C; ++i)
    if (!(noise[i] > 0.0f && noise[i] < 1.0f)) {
      char value[32];
      std::snprintf(value, sizeof value, "%g", static_cast<double>(noise[i]));
      return make_error("WaveRNNLoop: noise[" + std::to_string(i / (C * B)) + ", " + std::to_string(i / C % B) + ", " +
                        std::to_string(i % C) + "] = " + value +
                        " is outside (0, 1); the sampler's noise must be uniform in the open interval (0, 1)");
    }
  return nullptr;
}

OrtStatus* pack_weights(const TensorView* t, const LoopDims& d, const LoopQuant& quant, LoopWeights* w) {
  const std::string error = w->pack(d, t[7].data, t[8].data, t[9].data, t[10].data, t[11].data, t[12].data,
                                    t[13].data, t[14].data, t[15].data, quant);
  if (error.empty()) return nullptr;
  return make_error(error, error.find("out of memory") != std::string::npos ? ORT_FAIL : ORT_INVALID_ARGUMENT);
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info,
                                      void** kernel) {
  const Dispatch& dispatch_info = dispatch();
  if (!dispatch_info.kernels) return make_error(dispatch_info.error, ORT_FAIL);
  auto k = std::make_unique<LoopKernel>();
  k->kernels = dispatch_info.kernels;
  const std::string mode = attribute_string(info, "mode", "raw");
  if (mode == "raw") {
    k->sampling.mode = SampleMode::kRaw;
  } else if (mode == "mol") {
    k->sampling.mode = SampleMode::kMol;
  } else {
    return make_error("WaveRNNLoop: attribute mode must be 'raw' or 'mol', got '" + mode + "'");
  }
  const std::string sampler = attribute_string(info, "sampler", "inverse_cdf");
  if (sampler == "inverse_cdf") {
    k->sampling.sampler = Sampler::kInverseCdf;
  } else if (sampler == "argmax" && mode == "raw") {
    k->sampling.sampler = Sampler::kArgmax;
  } else if (sampler == "gumbel_max" && mode == "mol") {
    k->sampling.sampler = Sampler::kGumbelMax;
  } else {
    return make_error("WaveRNNLoop: attribute sampler must be 'inverse_cdf', 'argmax' (mode 'raw') or "
                      "'gumbel_max' (mode 'mol'), got '" + sampler + "' with mode '" + mode + "'");
  }
  const int64_t teacher = attribute_int(info, "teacher_forced", 0);
  if (teacher != 0 && teacher != 1)
    return make_error("WaveRNNLoop: attribute teacher_forced must be 0 or 1, got " + std::to_string(teacher));
  k->teacher = teacher == 1;
  const std::string quant = attribute_string(info, "quant", "none");
  if (quant == "int8" || quant == "int16") {
    k->quant.bits = quant == "int8" ? 8 : 16;
    const std::vector<float> ranges = attribute_floats(info, "act_ranges");
    if (ranges.size() != 2 || !(ranges[0] > 0.0f) || !(ranges[1] > 0.0f) || !std::isfinite(ranges[0]) ||
        !std::isfinite(ranges[1]))
      return make_error("WaveRNNLoop: quant '" + quant +
                        "' needs act_ranges = [largest relu(fc1), largest relu(fc2)], two positive finite floats");
    k->quant.fc1_range = ranges[0];
    k->quant.fc2_range = ranges[1];
  } else if (quant != "none") {
    return make_error("WaveRNNLoop: attribute quant must be 'none', 'int8' or 'int16', got '" + quant + "'");
  }
  if (const char* path = std::getenv("WAVEOPT_ACT_STATS"); path && *path && !k->quant.bits) {
    k->stats_path = path;
    WAVEOPT_RETURN_IF_ERROR(node_name(info, &k->node_name));
  }
  if (const char* path = std::getenv("WAVEOPT_STAGE_TIMERS"); path && *path) {
    k->timer_path = path;
    if (k->node_name.empty()) WAVEOPT_RETURN_IF_ERROR(node_name(info, &k->node_name));
    k->timer_kernel = g_timed_kernels.fetch_add(1);
  }
  TeamSettings settings;
  WAVEOPT_RETURN_IF_ERROR(kernel_team_settings(op, info, &settings));

  // Pack now if all weights are constant initializers with valid shapes; any problem is
  // left for Compute to report with the runtime shapes.
  TensorView t[kInputs];
  bool all_constant = true;
  for (size_t i = kWeightFirst; i <= kWeightLast && all_constant; ++i) {
    bool constant = false;
    WAVEOPT_RETURN_IF_ERROR(constant_input(info, i, &t[i], &constant));
    all_constant = constant;
  }
  if (all_constant) {
    LoopDims d;
    OrtStatus* status = weight_dims(t, &d, k->sampling.mode, k->teacher);
    if (status) {
      g_api->ReleaseStatus(status);
    } else {
      k->packed = std::make_unique<LoopWeights>();
      WAVEOPT_RETURN_IF_ERROR(pack_weights(t, d, k->quant, k->packed.get()));
      k->packed_dims = d;
      for (size_t i = kWeightFirst; i <= kWeightLast; ++i) k->packed_sources[i] = t[i].data;
    }
  }
  // Last: nothing can fail after the workers start.
  k->team = std::make_unique<ThreadTeam>(settings.threads, settings.pin == 1);
  k->team->set_adaptive(settings.adaptive == 1);
  *kernel = k.release();
  return nullptr;
}

OrtStatus* ORT_API_CALL compute(void* kernel_ptr, OrtKernelContext* context) {
  const LoopKernel& k = *static_cast<const LoopKernel*>(kernel_ptr);
  size_t count = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(context, &count));
  if (count < 17 || count > kInputs)
    return make_error("WaveRNNLoop: expects 17 inputs (18 with x0), got " + std::to_string(count));
  TensorView t[kInputs];
  for (size_t i = 0; i < count; ++i) {
    WAVEOPT_RETURN_IF_ERROR(context_input(context, i, &t[i]));
    if (!t[i].value && i < 17)
      return make_error("WaveRNNLoop: input " + std::to_string(i) + " (" + input_name(i, k.teacher) + ") is missing");
  }
  LoopDims d;
  WAVEOPT_RETURN_IF_ERROR(weight_dims(t, &d, k.sampling.mode, k.teacher));
  const int64_t H = d.hidden, F = d.fc, N = d.classes;
  if (t[0].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || t[0].shape.size() != 3)
    return make_error("WaveRNNLoop: gi1 must be float32 [T, B, 3H], got " + shape_string(t[0].shape));
  d.steps = t[0].shape[0];
  d.batch = t[0].shape[1];
  const int64_t T = d.steps, B = d.batch;
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[0], 0, k.teacher, {T, B, 3 * H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[1], 1, k.teacher, {T, B, 3 * H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[2], 2, k.teacher, {T, B, F}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[3], 3, k.teacher, {T, B, F}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[4], 4, k.teacher, {3 * H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[5], 5, k.teacher, {3 * H}));
  WAVEOPT_RETURN_IF_ERROR(expect_shape(t[6], 6, k.teacher, {F}));
  if (k.teacher) {
    WAVEOPT_RETURN_IF_ERROR(expect_shape(t[16], 16, k.teacher, {T, B}));
    if (t[17].value) return make_error("WaveRNNLoop: x0 is for free-running loops; teacher-forced reads prev_samples");
  } else {
    const int64_t C = noise_columns(k.sampling.sampler);
    WAVEOPT_RETURN_IF_ERROR(expect_shape(t[16], 16, k.teacher, {T, B, C}));
    WAVEOPT_RETURN_IF_ERROR(check_noise(t[16].data, T, B, C));
    if (t[17].value) WAVEOPT_RETURN_IF_ERROR(expect_shape(t[17], 17, k.teacher, {B}));
  }

  // Weights: the ones packed at creation if they are what this run sees, else pack now.
  const LoopWeights* weights = k.packed.get();
  bool same = weights && k.packed_dims.hidden == H && k.packed_dims.fc == F && k.packed_dims.classes == N;
  for (size_t i = kWeightFirst; i <= kWeightLast && same; ++i) same = k.packed_sources[i] == t[i].data;
  LoopWeights local;
  if (!same) {
    WAVEOPT_RETURN_IF_ERROR(pack_weights(t, d, k.quant, &local));
    weights = &local;
  }

  std::vector<int64_t> out_shape = k.teacher ? std::vector<int64_t>{T, B, N} : std::vector<int64_t>{T, B};
  OrtValue* output = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetOutput(context, 0, out_shape.data(), out_shape.size(), &output));
  void* out_data = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->GetTensorMutableData(output, &out_data));
  if (T == 0 || B == 0) return nullptr;

  LoopInputs in;
  in.gi1 = t[0].data;
  in.gi2 = t[1].data;
  in.f1 = t[2].data;
  in.f2 = t[3].data;
  in.u1 = t[4].data;
  in.u2 = t[5].data;
  in.u3 = t[6].data;
  in.noise = k.teacher ? nullptr : t[16].data;
  in.prev_samples = k.teacher ? t[16].data : nullptr;
  in.x0 = t[17].value ? t[17].data : nullptr;
  const bool timed = !k.timer_path.empty();
  LoopStageTimes times;
  LoopActivationStats stats;
  const bool with_stats = !k.stats_path.empty();
  const std::string error = run_wavernn_loop(k.kernels, d, *weights, in, k.sampling, static_cast<float*>(out_data),
                                             timed ? &times : nullptr, with_stats ? &stats : nullptr, k.team.get());
  if (!error.empty()) return make_error(error, ORT_FAIL);
  if (timed) write_stage_times(k, d, times);
  if (with_stats) write_activation_stats(k, stats);
  return nullptr;
}

void ORT_API_CALL destroy(void* kernel) { delete static_cast<LoopKernel*>(kernel); }
const char* ORT_API_CALL name(const OrtCustomOp*) { return "WaveRNNLoop"; }
size_t ORT_API_CALL input_count(const OrtCustomOp*) { return kInputs; }
size_t ORT_API_CALL output_count(const OrtCustomOp*) { return 1; }
ONNXTensorElementDataType ORT_API_CALL float_type(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_characteristic(const OrtCustomOp*, size_t i) {
  return i == 17 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

}  // namespace

OrtCustomOp make_wavernn_loop_op() {
  OrtCustomOp op;
  init_custom_op(&op);
  op.GetName = name;
  op.GetInputTypeCount = input_count;
  op.GetOutputTypeCount = output_count;
  op.GetInputType = float_type;
  op.GetOutputType = float_type;
  op.GetInputCharacteristic = input_characteristic;
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.KernelDestroy = destroy;
  return op;
}

}  // namespace waveopt
