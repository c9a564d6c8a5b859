// Compiled without ISA flags (shared code): threads, a futex and the CPU's pause.
#include "thread_team.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

namespace waveopt {
namespace {

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  // Returns at once if *word != expected (EAGAIN), on a wake, or spuriously: callers re-check.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

inline void cpu_pause() { __builtin_ia32_pause(); }
inline int64_t ticks() { return static_cast<int64_t>(__builtin_ia32_rdtsc()); }

// Waits until *word != seen: spins (pause) for spin_ticks TSC ticks, then futex sleeps
// (counted in *sleepers while asleep, so the waker knows whether to make the syscall);
// spin_only: never sleeps. Returns whether it slept.
bool wait_for_change(std::atomic<uint32_t>* word, uint32_t seen, int64_t spin_ticks, bool spin_only,
                     std::atomic<int>* sleepers) {
  const int64_t start = ticks();
  for (int i = 0;; ++i) {
    if (word->load(std::memory_order_acquire) != seen) return false;
    cpu_pause();
    if ((i & 15) == 15 && !spin_only && ticks() - start > spin_ticks) break;
  }
  // Dekker with the waker: we announce ourselves (seq_cst) before the futex re-reads the
  // word; the waker changes the word (seq_cst) before it reads the sleeper count.
  sleepers->fetch_add(1, std::memory_order_seq_cst);
  while (word->load(std::memory_order_seq_cst) == seen) futex_wait(word, seen);
  sleepers->fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void advance_and_wake(std::atomic<uint32_t>* word, std::atomic<int>* sleepers) {
  word->fetch_add(1, std::memory_order_seq_cst);
  if (sleepers->load(std::memory_order_seq_cst) > 0) futex_wake_all(word);
}

}  // namespace

Range share(int64_t items, int member, int members) {
  const int64_t base = items / members, extra = items % members;
  Range r;
  r.begin = member * base + (member < extra ? member : extra);
  r.end = r.begin + base + (member < extra ? 1 : 0);
  return r;
}

void Barrier::wait() {
  // count_ is read once, before arriving: the moment the last member arrives, run() may
  // reset() it for the next job.
  const int count = count_;
  if (count <= 1) return;
  const uint32_t gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == count - 1) {
    // Last to arrive: reset the count (nobody touches it before seeing the new generation),
    // then release everyone (the release orders every member's writes before their reads).
    arrived_.store(0, std::memory_order_relaxed);
    advance_and_wake(&generation_, &sleepers_);
    return;
  }
  if (wait_for_change(&generation_, gen, spin_ticks_, spin_only_, &sleepers_))
    sleeps_.fetch_add(1, std::memory_order_relaxed);
}

ThreadTeam::ThreadTeam(int threads, bool pin)
    : size_(threads < 1 ? 1 : threads),
      pin_(pin),
      owner_pid_(static_cast<long>(getpid())),
      active_(size_),
      barrier_(size_),
      signals_(new Signal[static_cast<size_t>(size_)]) {
  for (int member = 1; member < size_; ++member)
    workers_.push_back(std::make_unique<std::thread>(&ThreadTeam::work, this, member));
}

ThreadTeam::~ThreadTeam() {
  if (!usable()) {
    // A forked child: the workers were never copied into this process. Their std::thread
    // objects cannot be joined (nor destroyed while "joinable"): leave them, leaked.
    for (auto& w : workers_) w.release();
    return;
  }
  stopping_.store(true, std::memory_order_relaxed);
  for (int member = 1; member < size_; ++member) advance_and_wake(&signals_[member].go, &signals_[member].sleeping);
  for (auto& w : workers_) w->join();
}

bool ThreadTeam::usable() const { return static_cast<long>(getpid()) == owner_pid_; }

void ThreadTeam::run(const Job& job) {
  std::unique_lock<std::mutex> lock(run_mutex_, std::try_to_lock);
  if (size_ == 1 || !lock.owns_lock() || !usable()) {
    job(Crew(0, 1, nullptr));  // busy (another caller), forked, or a team of one: alone
    return;
  }
  const int members = adaptive_ ? active_ : size_;
  if (members == 1) {
    job(Crew(0, 1, nullptr));
    adapt(1, 0, 0);
    return;
  }
  const uint32_t rounds = barrier_.rounds();
  const int64_t sleeps = barrier_.sleeps();
  barrier_.reset(members);  // nobody is inside it between jobs
  job_ = &job;
  job_members_ = members;
  for (int member = 1; member < members; ++member)  // publishes job_ (seq_cst includes release)
    advance_and_wake(&signals_[member].go, &signals_[member].sleeping);
  job(Crew(0, members, &barrier_));
  barrier_.wait();  // every member finished the job
  job_ = nullptr;
  const int64_t waits = static_cast<int64_t>(static_cast<uint32_t>(barrier_.rounds() - rounds)) * (members - 1);
  adapt(members, waits, barrier_.sleeps() - sleeps);
}

void ThreadTeam::adapt(int members, int64_t waits, int64_t sleeps) {
  if (!adaptive_) return;
  const bool busy = members > 1 && waits > 0 && sleeps * 1000 > waits * kSleepPerMille;
  if (busy) {
    // A failed probe: the machine is still busy, so wait twice as long before the next one
    // (each probe costs a job at the descheduled team's speed).
    if (probing_) probe_interval_ = 2 * probe_interval_ < kProbeMax ? 2 * probe_interval_ : kProbeMax;
    active_ = members / 2 > 1 ? members / 2 : 1;  // peers were descheduled: use fewer
    jobs_since_probe_ = 0;
  } else if (probing_) {
    probe_interval_ = kProbeEvery;  // the whole team works again
  } else if (active_ < size_ && ++jobs_since_probe_ >= probe_interval_) {
    active_ = size_;  // try the whole team again
    jobs_since_probe_ = 0;
    probing_ = true;
    return;
  }
  probing_ = false;
}

void ThreadTeam::work(int member) {
  if (pin_) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0) {
      int nth = member % CPU_COUNT(&allowed), cpu = 0;
      for (; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &allowed) && nth-- == 0) break;
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      pthread_setaffinity_np(pthread_self(), sizeof one, &one);  // best effort
    }
  }
  uint32_t seen = 0;
  for (;;) {
    // Idle: spin as long as a barrier does (back-to-back runs start fast), then sleep.
    Signal& signal = signals_[member];
    wait_for_change(&signal.go, seen, Barrier::kDefaultSpinTicks, false, &signal.sleeping);
    seen = signal.go.load(std::memory_order_acquire);
    if (stopping_.load(std::memory_order_relaxed)) return;
    (*job_)(Crew(member, job_members_, &barrier_));
    barrier_.wait();
  }
}

std::string parse_setting(const std::string& what, const char* text, bool is_pin, int* out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  const long lo = is_pin ? 0 : 1, hi = is_pin ? 1 : kMaxThreads;
  if (!*text || *end || errno || v < lo || v > hi)
    return what + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got '" +
           text + "'";
  *out = static_cast<int>(v);
  return std::string();
}

std::string resolve_settings(TeamSettings configured, TeamSettings* out) {
  *out = configured;
  if (out->threads < 1) {
    out->threads = 1;
    if (const char* env = std::getenv("WAVEOPT_THREADS"); env && *env) {
      const std::string error = parse_setting("WAVEOPT_THREADS", env, false, &out->threads);
      if (!error.empty()) return error;
    }
  }
  struct Flag {
    int* value;
    const char* env;
    int fallback;
  };
  for (const Flag& f : {Flag{&out->pin, "WAVEOPT_PIN", 0}, Flag{&out->adaptive, "WAVEOPT_THREADS_ADAPTIVE", 1}}) {
    if (*f.value >= 0) continue;
    *f.value = f.fallback;
    if (const char* env = std::getenv(f.env); env && *env) {
      const std::string error = parse_setting(f.env, env, true, f.value);
      if (!error.empty()) return error;
    }
  }
  return std::string();
}

}  // namespace waveopt
