#include "ort_util.h"

#include <cstdio>
#include <cstring>

namespace waveopt {

const OrtApi* g_api = nullptr;
const OrtApiBase* g_api_base = nullptr;

OrtStatus* describe(const OrtValue* value, TensorView* out) {
  out->value = value;
  int is_tensor = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->IsTensor(value, &is_tensor));
  if (!is_tensor) return make_error("expected a tensor");
  OrtTensorTypeAndShapeInfo* info = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* status = g_api->GetTensorElementType(info, &out->type);
  if (!status) status = g_api->GetDimensionsCount(info, &rank);
  if (!status) {
    out->shape.assign(rank, 0);
    if (rank) status = g_api->GetDimensions(info, out->shape.data(), rank);
  }
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  if (status) return status;
  out->data = nullptr;
  if (out->type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    void* data = nullptr;
    WAVEOPT_RETURN_IF_ERROR(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));
    out->data = static_cast<const float*>(data);
  }
  return nullptr;
}

OrtStatus* context_input(OrtKernelContext* context, size_t index, TensorView* out) {
  *out = TensorView();
  size_t count = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(context, &count));
  if (index >= count) return nullptr;
  const OrtValue* value = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, index, &value));
  if (!value) return nullptr;
  return describe(value, out);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string attribute_string(const OrtKernelInfo* info, const char* name, const std::string& fallback) {
  size_t size = 0;
  OrtStatus* status = g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (status) {
    g_api->ReleaseStatus(status);
    return fallback;
  }
  std::string value(size, '\0');
  status = g_api->KernelInfoGetAttribute_string(info, name, &value[0], &size);
  if (status) {
    g_api->ReleaseStatus(status);
    return fallback;
  }
  value.resize(size > 0 ? size - 1 : 0);
  return value;
}

int64_t attribute_int(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t value = 0;
  OrtStatus* status = g_api->KernelInfoGetAttribute_int64(info, name, &value);
  if (status) {
    g_api->ReleaseStatus(status);
    return fallback;
  }
  return value;
}

std::vector<float> attribute_floats(const OrtKernelInfo* info, const char* name) {
  size_t size = 0;
  OrtStatus* status = g_api->KernelInfoGetAttributeArray_float(info, name, nullptr, &size);
  if (status) {
    g_api->ReleaseStatus(status);
    return {};
  }
  std::vector<float> values(size);
  if (size == 0) return values;
  status = g_api->KernelInfoGetAttributeArray_float(info, name, values.data(), &size);
  if (status) {
    g_api->ReleaseStatus(status);
    return {};
  }
  values.resize(size);
  return values;
}

OrtStatus* constant_input(const OrtKernelInfo* info, size_t index, TensorView* out, bool* is_constant) {
  *is_constant = false;
  *out = TensorView();
  size_t count = 0;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelInfo_GetInputCount(info, &count));
  if (index >= count) return nullptr;
  int constant = 0;
  const OrtValue* value = nullptr;
  WAVEOPT_RETURN_IF_ERROR(g_api->KernelInfoGetConstantInput_tensor(info, index, &constant, &value));
  if (!constant || !value) return nullptr;
  *is_constant = true;
  return describe(value, out);
}

namespace {

const char* ORT_API_CALL cpu_provider(const OrtCustomOp*) { return nullptr; }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}
OrtMemType ORT_API_CALL default_memory(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL one(const OrtCustomOp*) { return 1; }
int ORT_API_CALL start_version(const OrtCustomOp*) { return 1; }
int ORT_API_CALL end_version(const OrtCustomOp*) { return 0x7fffffff; }

}  // namespace

void init_custom_op(OrtCustomOp* op) {
  std::memset(op, 0, sizeof(*op));
  op->version = kOrtApiVersion;
  op->GetExecutionProviderType = cpu_provider;
  op->GetInputCharacteristic = required;
  op->GetOutputCharacteristic = required;
  op->GetInputMemoryType = default_memory;
  op->GetVariadicInputMinArity = one;
  op->GetVariadicInputHomogeneity = one;
  op->GetVariadicOutputMinArity = one;
  op->GetVariadicOutputHomogeneity = one;
  op->GetStartVersion = start_version;
  op->GetEndVersion = end_version;
}

namespace {

OrtStatus* parse_entry(const char* key, const char* text, TeamSettings* out) {
  const bool pin = std::strcmp(key, kPinKey) == 0;
  const std::string error = parse_setting(std::string("session config entry ") + key, text, pin,
                                          pin ? &out->pin : &out->threads);
  return error.empty() ? nullptr : make_error("waveopt ops: " + error);
}

}  // namespace

bool ort_at_least(int major, int minor) {
  int have_major = 0, have_minor = 0;
  if (std::sscanf(g_api_base->GetVersionString(), "%d.%d", &have_major, &have_minor) != 2) return false;
  return have_major > major || (have_major == major && have_minor >= minor);
}

OrtStatus* session_team_settings(const OrtSessionOptions* options, TeamSettings* out) {
  for (const char* key : {kThreadsKey, kPinKey}) {
    int has = 0;
    WAVEOPT_RETURN_IF_ERROR(g_api->HasSessionConfigEntry(options, key, &has));
    if (!has) continue;
    size_t size = 0;
    WAVEOPT_RETURN_IF_ERROR(g_api->GetSessionConfigEntry(options, key, nullptr, &size));
    std::string value(size, '\0');
    WAVEOPT_RETURN_IF_ERROR(g_api->GetSessionConfigEntry(options, key, &value[0], &size));
    WAVEOPT_RETURN_IF_ERROR(parse_entry(key, value.c_str(), out));
  }
  return nullptr;
}

OrtStatus* kernel_team_settings(const OrtCustomOp* op, const OrtKernelInfo* info, TeamSettings* out) {
  TeamSettings configured = reinterpret_cast<const WaveoptOp*>(op)->settings;
  // OrtApi 24 (ORT 1.24) added KernelInfo_GetConfigEntries. Asked only of a runtime that
  // has it: older ones return nullptr but also log an error for the request.
  const OrtApi* api24 = ort_at_least(1, 24) ? g_api_base->GetApi(24) : nullptr;
  if (api24) {
    OrtKeyValuePairs* entries = nullptr;
    WAVEOPT_RETURN_IF_ERROR(api24->KernelInfo_GetConfigEntries(info, &entries));
    OrtStatus* status = nullptr;
    for (const char* key : {kThreadsKey, kPinKey}) {
      const char* value = entries ? api24->GetKeyValue(entries, key) : nullptr;
      if (value && !status) status = parse_entry(key, value, &configured);
    }
    if (entries) api24->ReleaseKeyValuePairs(entries);
    if (status) return status;
  }
  const std::string error = resolve_settings(configured, out);
  return error.empty() ? nullptr : make_error("waveopt ops: " + error);
}

}  // namespace waveopt
