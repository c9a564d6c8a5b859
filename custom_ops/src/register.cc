// The library's only exported symbol: RegisterCustomOps, called by ORT when a session's
// options load this library (SessionOptions.register_custom_ops_library in Python).
#include <list>
#include <mutex>

#include "dispatch.h"
#include "ort_util.h"

namespace waveopt {
OrtCustomOp make_wavernn_loop_op();
OrtCustomOp make_fused_dense_op();
OrtCustomOp make_info_op();
}  // namespace waveopt

using namespace waveopt;

namespace {

// The domains live for the process: ORT keeps pointers to them and their ops in every
// session registered with them, and a library is never unloaded while ORT may call into it.
// One domain per distinct team setting (sessions with "waveopt.threads" 2 share one, with 4
// another): the ops carry the setting to the kernels they create (WaveoptOp).
struct OpSet {
  TeamSettings settings;
  WaveoptOp loop, dense, info;
  OrtCustomOpDomain* domain = nullptr;
};
std::list<OpSet> g_op_sets;  // never shrinks; list: elements never move
std::mutex g_domain_mutex;

OrtStatus* make_domain(const TeamSettings& settings, OrtCustomOpDomain** out) {
  std::lock_guard<std::mutex> lock(g_domain_mutex);
  for (const OpSet& set : g_op_sets)
    if (set.settings.threads == settings.threads && set.settings.pin == settings.pin) {
      *out = set.domain;
      return nullptr;
    }
  OpSet& set = g_op_sets.emplace_back();
  set.settings = settings;
  set.loop = {make_wavernn_loop_op(), settings};
  set.dense = {make_fused_dense_op(), settings};
  set.info = {make_info_op(), settings};
  OrtCustomOpDomain* domain = nullptr;
  OrtStatus* status = g_api->CreateCustomOpDomain(kDomain, &domain);
  for (WaveoptOp* op : {&set.loop, &set.dense, &set.info})
    if (!status) status = g_api->CustomOpDomain_Add(domain, &op->op);
  if (status) {
    if (domain) g_api->ReleaseCustomOpDomain(domain);
    g_op_sets.pop_back();
    return status;
  }
  set.domain = domain;
  *out = domain;
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
  {
    std::lock_guard<std::mutex> lock(g_domain_mutex);
    if (!g_api) {  // set once: ops running in other sessions read them without the lock
      g_api = api;
      g_api_base = api_base;
    }
  }
  TeamSettings settings;  // waveopt.threads / waveopt.pin of this session, if set
  WAVEOPT_RETURN_IF_ERROR(session_team_settings(options, &settings));
  OrtCustomOpDomain* domain = nullptr;
  WAVEOPT_RETURN_IF_ERROR(make_domain(settings, &domain));
  return api->AddCustomOpDomain(options, domain);
}
