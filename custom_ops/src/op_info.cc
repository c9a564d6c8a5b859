// WaveoptInfo (domain waveopt.ops, version 1): no inputs, one string output [1] holding a JSON
// object that says which kernels this process runs and why. The library exports nothing
// but RegisterCustomOps, so this op is how Python (waveopt.ops.info()) asks it.
#include <dlfcn.h>

#include <memory>
#include <string>

#include "dispatch.h"
#include "ort_util.h"

namespace waveopt {
namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out + "\"";
}

const char* json_bool(bool b) { return b ? "true" : "false"; }

std::string library_file() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&library_file), &info) && info.dli_fname) return info.dli_fname;
  return "";
}

// The kernel: the team settings of the session that created it.
struct InfoKernel {
  TeamSettings team;
};

std::string info_json(const InfoKernel& k) {
  const Dispatch& d = dispatch();
  std::string s = "{";
  s += "\"isa\": " + json_string(d.kernels ? d.kernels->isa : "") + ", ";
  s += "\"requested\": " + json_string(d.requested) + ", ";
  s += "\"reason\": " + json_string(d.reason) + ", ";
  s += "\"cpu\": {\"avx2\": " + std::string(json_bool(d.cpu_avx2)) + ", \"fma\": " + json_bool(d.cpu_fma) +
       ", \"avx512f\": " + json_bool(d.cpu_avx512f) + ", \"avx512bw\": " + json_bool(d.cpu_avx512bw) +
       ", \"avx512vl\": " + json_bool(d.cpu_avx512vl) + ", \"avx512vnni\": " + json_bool(d.cpu_avx512vnni) + "}, ";
  s += "\"ort_version\": " + json_string(g_api_base->GetVersionString()) + ", ";
  s += "\"ort_api\": " + std::to_string(kOrtApiVersion) + ", ";
  s += "\"library\": " + json_string(library_file()) + ", ";
  s += "\"threads\": " + std::to_string(k.team.threads) + ", ";
  s += "\"pin\": " + std::string(json_bool(k.team.pin == 1)) + ", ";
  s += "\"adaptive\": " + std::string(json_bool(k.team.adaptive == 1)) + ", ";
  s += "\"ops\": [\"WaveRNNLoop\", \"FusedDense\", \"WaveoptInfo\"]";
  return s + "}";
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info,
                                      void** kernel) {
  auto k = std::make_unique<InfoKernel>();
  WAVEOPT_RETURN_IF_ERROR(kernel_team_settings(op, info, &k->team));
  *kernel = k.release();
  return nullptr;
}

OrtStatus* ORT_API_CALL compute(void* kernel, OrtKernelContext* context) {
  const int64_t shape[1] = {1};
  OrtValue* output = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetOutput(context, 0, shape, 1, &output));
  const std::string text = info_json(*static_cast<const InfoKernel*>(kernel));
  const char* strings[1] = {text.c_str()};
  return g_api->FillStringTensor(output, strings, 1);
}

void ORT_API_CALL destroy(void* kernel) { delete static_cast<InfoKernel*>(kernel); }
const char* ORT_API_CALL name(const OrtCustomOp*) { return "WaveoptInfo"; }
size_t ORT_API_CALL zero(const OrtCustomOp*) { return 0; }
size_t ORT_API_CALL one(const OrtCustomOp*) { return 1; }
ONNXTensorElementDataType ORT_API_CALL string_type(const OrtCustomOp*, size_t) {
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING;
}

}  // namespace

OrtCustomOp make_info_op() {
  OrtCustomOp op;
  init_custom_op(&op);
  op.GetName = name;
  op.GetInputTypeCount = zero;
  op.GetOutputTypeCount = one;
  op.GetInputType = string_type;
  op.GetOutputType = string_type;
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.KernelDestroy = destroy;
  return op;
}

}  // namespace waveopt
