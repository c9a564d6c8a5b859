// Small helpers over ONNX Runtime's C API for the op glue (never included by kernels).
// The API pointer is the version-17 table (OrtGetApiBase()->GetApi(17)), so one build runs
// in ORT 1.17 and newer; only functions that exist in API 17 may be called through it.
#ifndef WAVEOPT_ORT_UTIL_H
#define WAVEOPT_ORT_UTIL_H

#include <cstdint>
#include <string>
#include <vector>

#include "onnxruntime_c_api.h"
#include "thread_team.h"

namespace waveopt {

constexpr uint32_t kOrtApiVersion = 17;
constexpr const char* kDomain = "waveopt.ops";

// Set once by RegisterCustomOps before any op can run. (OrtGetApiBase itself is not
// called: the library links against no ONNX Runtime symbol.)
extern const OrtApi* g_api;
extern const OrtApiBase* g_api_base;

// Returns from the enclosing function (which returns OrtStatus*) if `expr` fails.
#define WAVEOPT_RETURN_IF_ERROR(expr)          \
  do {                                         \
    OrtStatus* status_ = (expr);               \
    if (status_ != nullptr) return status_;    \
  } while (0)

inline OrtStatus* make_error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return g_api->CreateStatus(code, message.c_str());
}

// A tensor input: element type, shape and data pointer (nullptr for an absent optional input).
struct TensorView {
  const OrtValue* value = nullptr;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  const float* data = nullptr;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Reads the type, shape and (for float tensors) the data of an OrtValue.
OrtStatus* describe(const OrtValue* value, TensorView* out);
// Input `index` of a kernel context (absent optional input: out->value stays nullptr).
OrtStatus* context_input(OrtKernelContext* context, size_t index, TensorView* out);
// "[2, 3, 4]"
std::string shape_string(const std::vector<int64_t>& shape);
// A string attribute, or `fallback` if the node does not have it.
std::string attribute_string(const OrtKernelInfo* info, const char* name, const std::string& fallback);
int64_t attribute_int(const OrtKernelInfo* info, const char* name, int64_t fallback);
// A float-list attribute, or empty if the node does not have it.
std::vector<float> attribute_floats(const OrtKernelInfo* info, const char* name);

// The constant initializer feeding input `index`, or nullptr if that input is not constant.
OrtStatus* constant_input(const OrtKernelInfo* info, size_t index, TensorView* out, bool* is_constant);

// The fields of OrtCustomOp every op fills the same way; ops override what differs.
void init_custom_op(OrtCustomOp* op);

// An op of this library with the team settings of the sessions it serves: RegisterCustomOps
// keeps one domain (and one set of ops) per distinct setting, alive for the process.
struct WaveoptOp {
  OrtCustomOp op;  // first member: ORT's OrtCustomOp* to it is a pointer to the WaveoptOp
  TeamSettings settings;
};

// Session config keys (set them before registering the library, see README "Threads").
constexpr const char* kThreadsKey = "waveopt.threads";
constexpr const char* kPinKey = "waveopt.pin";

// Whether the ONNX Runtime running us is at least major.minor (its version string).
bool ort_at_least(int major, int minor);

// "waveopt.threads" and "waveopt.pin" of a session's options (unset ones stay unset).
OrtStatus* session_team_settings(const OrtSessionOptions* options, TeamSettings* out);
// The settings a kernel of `op` runs with: the session's entries as read at registration;
// on ORT >= 1.24 the entries of the session creating the kernel override them (so there an
// entry added after registering counts too); unset ones from the environment, then 1
// thread, not pinned.
OrtStatus* kernel_team_settings(const OrtCustomOp* op, const OrtKernelInfo* info, TeamSettings* out);

}  // namespace waveopt

#endif
