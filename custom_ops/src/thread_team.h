// The worker team of one op kernel: created with the kernel, reused by every Compute call.
//
// A team of n members is the thread that calls run() (member 0) and n - 1 workers started
// when the team is created. run(job) hands the same job to every member and returns when all
// have finished it; inside the job, Crew::sync() is a barrier across the members. Work is
// split by fixed ranges (share()), so which member computes an output element depends only
// on the member count, and every element is computed by exactly one member with the same
// kernel: results are bit-identical for any thread count (the loop and FusedDense rely on it).
//
// The barrier survives a busy machine: a member that arrives early spins briefly (pause, for
// ~20 us by the TSC), then sleeps on a futex, so a descheduled peer costs a sleep, not a core
// burnt spinning against it (sched_yield was tried between the two and measured worse: with
// another runnable process it hands the core away for a whole time slice). Idle workers
// (between jobs) spin as briefly, then sleep on a futex too.
//
// Adaptive member count: run() uses fewer members than the team has when the last jobs'
// barrier waits often ended asleep (a peer descheduled: more runnable threads than free
// cores), halving down to 1, and probes the whole team again after kProbeEvery jobs; a probe
// that finds the machine still busy doubles that wait (up to kProbeMax jobs). With
// another CPU-bound process on a 2-core machine the team so falls back to one thread instead
// of losing to it; results do not change (bit-identical for any member count). Callers split
// long work into several jobs (the loop: one per 64 steps) so the choice can follow the load.
//
// No deadlock by construction:
//  - run() from a second thread while the team is busy (one session run from several Python
//    threads) does not wait: that call runs the job alone (a crew of one) on its own thread;
//  - in a child process after fork() the workers do not exist: run() runs alone there, and
//    the destructor leaves the (absent) threads alone;
//  - destroying an idle team wakes the workers, which exit, and joins them.
#ifndef WAVEOPT_THREAD_TEAM_H
#define WAVEOPT_THREAD_TEAM_H

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace waveopt {

// [begin, end) of `items` that member `member` of `members` owns: contiguous, in member order,
// sizes differing by at most one (the first `items % members` members get one more).
struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
Range share(int64_t items, int member, int members);

// Spin-then-sleep barrier (sense by generation count) for `count` threads.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  // Only while no thread is inside wait().
  void reset(int count) { count_ = count; }
  void wait();
  // Tuning, and what the kernel test's barrier benchmark compares: TSC ticks to spin before
  // sleeping (0 = sleep at once), or spin_only (never sleep).
  void set_backoff(int64_t spin_ticks, bool spin_only) {
    spin_ticks_ = spin_ticks;
    spin_only_ = spin_only;
  }
  // Rounds completed (each made count - 1 threads wait) and how many waits ended asleep on
  // the futex: counters that wrap, for differences.
  uint32_t rounds() const { return generation_.load(std::memory_order_relaxed); }
  int64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

  // ~20 us at 2.5 GHz: far longer than members' imbalance within a step (a few us), far
  // shorter than a scheduler time slice (ms), which is what a descheduled peer costs.
  static constexpr int64_t kDefaultSpinTicks = 50000;

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
  alignas(64) std::atomic<int64_t> sleeps_{0};
  int count_;
  int64_t spin_ticks_ = kDefaultSpinTicks;
  bool spin_only_ = false;
};

// What a job sees: its member index, the member count and the barrier across them.
class Crew {
 public:
  Crew(int member, int members, Barrier* barrier) : member_(member), members_(members), barrier_(barrier) {}
  int member() const { return member_; }
  int members() const { return members_; }
  Range share(int64_t items) const { return waveopt::share(items, member_, members_); }
  void sync() const {
    if (barrier_) barrier_->wait();
  }

 private:
  int member_, members_;
  Barrier* barrier_;
};

using Job = std::function<void(const Crew&)>;

class ThreadTeam {
 public:
  // threads >= 1 members in all (threads - 1 workers). `pin`: worker i runs only on the
  // i-th CPU of the process's affinity mask (member 0, the caller's thread, is never pinned).
  explicit ThreadTeam(int threads, bool pin = false);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  int size() const { return size_; }
  // Runs job on the members in use (all, or fewer when adapting, see above) and returns when
  // all are done (see the top of this file for when it runs on the calling thread alone
  // instead). The job must not throw.
  void run(const Job& job);
  // false: always all members (tests of the partition; benchmarks of the raw team).
  void set_adaptive(bool adaptive) { adaptive_ = adaptive; }
  // The barrier's backoff (Barrier::set_backoff), for tests and benchmarks; not during run().
  void set_backoff(int64_t spin_ticks, bool spin_only) { barrier_.set_backoff(spin_ticks, spin_only); }
  // Members the next run() will use (diagnostics and tests).
  int active() const { return active_; }

  // Jobs before the next probe (diagnostics and tests).
  int probe_interval() const { return probe_interval_; }

  static constexpr int kProbeEvery = 32;      // jobs on fewer members before trying all again
  static constexpr int kProbeMax = 1024;      // the longest wait after failed probes
  static constexpr int kSleepPerMille = 100;  // > 10 % of barrier waits asleep: too busy

 private:
  void work(int member);
  bool usable() const;
  void adapt(int members, int64_t waits, int64_t sleeps);

  int size_;
  bool pin_;
  long owner_pid_;
  bool adaptive_ = true;
  int active_;
  int jobs_since_probe_ = 0;
  int probe_interval_ = kProbeEvery;
  bool probing_ = false;  // the next job is a probe of the whole team
  std::mutex run_mutex_;
  Barrier barrier_;
  // One start signal per worker, on its own cache line: run() signals only the members a job
  // uses, so a worker left out never reads job_ (which the next run() may be rewriting).
  struct alignas(64) Signal {
    std::atomic<uint32_t> go{0};
    std::atomic<int> sleeping{0};
  };
  std::unique_ptr<Signal[]> signals_;  // [size_]; signals_[0] unused (member 0 is the caller)
  std::atomic<bool> stopping_{false};
  const Job* job_ = nullptr;  // both published by a worker's signal (release/acquire)
  int job_members_ = 0;
  std::vector<std::unique_ptr<std::thread>> workers_;
};

// The team settings of a kernel: a session's config entries "waveopt.threads" and
// "waveopt.pin" when set, else the environment variables WAVEOPT_THREADS and WAVEOPT_PIN,
// else 1 thread, not pinned; WAVEOPT_THREADS_ADAPTIVE=0 (environment only, for tests and
// benchmarks) keeps every member working however busy the machine is. Threads are 1 to
// kMaxThreads; pin and adaptive are 0 or 1.
constexpr int kMaxThreads = 256;
struct TeamSettings {
  int threads = 0;    // 0: not set
  int pin = -1;       // -1: not set
  int adaptive = -1;  // -1: not set
};
// Parses one setting's text into *out (threads: 1..kMaxThreads, pin: 0 or 1); returns an
// error message naming `what`, empty on success.
std::string parse_setting(const std::string& what, const char* text, bool is_pin, int* out);
// Fills what `configured` leaves unset from the environment (then the defaults); returns an
// error message for a malformed environment variable, empty on success.
std::string resolve_settings(TeamSettings configured, TeamSettings* out);

}  // namespace waveopt

#endif
