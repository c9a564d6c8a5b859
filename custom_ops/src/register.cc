// The library's only exported symbol: RegisterCustomOps, called by ORT when a session's
// options load this library (SessionOptions.register_custom_ops_library in Python).
#include <mutex>

#include "dispatch.h"
#include "ort_util.h"

namespace waveopt {
OrtCustomOp* wavernn_loop_op();
OrtCustomOp* fused_dense_op();
OrtCustomOp* info_op();
}  // namespace waveopt

using namespace waveopt;

namespace {

// The domain lives for the process: ORT keeps pointers to it and its ops in every session
// registered with it, and a library is never unloaded while ORT may call into it.
OrtCustomOpDomain* g_domain = nullptr;
std::mutex g_domain_mutex;

OrtStatus* make_domain(const OrtApi* api, const OrtApiBase* api_base, OrtCustomOpDomain** out) {
  std::lock_guard<std::mutex> lock(g_domain_mutex);
  if (!g_api) {  // set once: ops running in other sessions read them without the lock
    g_api = api;
    g_api_base = api_base;
  }
  if (!g_domain) {
    OrtCustomOpDomain* domain = nullptr;
    WAVEOPT_RETURN_IF_ERROR(g_api->CreateCustomOpDomain(kDomain, &domain));
    for (OrtCustomOp* op : {wavernn_loop_op(), fused_dense_op(), info_op()}) {
      OrtStatus* status = g_api->CustomOpDomain_Add(domain, op);
      if (status) {
        g_api->ReleaseCustomOpDomain(domain);
        return status;
      }
    }
    g_domain = domain;
  }
  *out = g_domain;
  return nullptr;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kOrtApiVersion);
  if (!api) {
    const OrtApi* oldest = api_base->GetApi(1);
    return oldest ? oldest->CreateStatus(ORT_FAIL, "waveopt ops need ONNX Runtime 1.17 or newer (ORT API 17)")
                  : nullptr;
  }
  const Dispatch& d = dispatch();
  if (!d.kernels) return api->CreateStatus(ORT_INVALID_ARGUMENT, ("waveopt ops: " + d.error).c_str());
  OrtCustomOpDomain* domain = nullptr;
  WAVEOPT_RETURN_IF_ERROR(make_domain(api, api_base, &domain));
  return api->AddCustomOpDomain(options, domain);
}
