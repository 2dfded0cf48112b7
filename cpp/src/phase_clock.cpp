// PhaseClock: per-update phase times on the host or with CUDA events, and NVTX ranges.
#include "egsde/phase_clock.h"

#ifdef EGSDE_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include "cuda_status.h"
#endif

#include "egsde/device.h"

namespace egsde {
namespace {

constexpr int kMaxSegments = 8;                       // phase segments per step
constexpr int kMarksPerStep = 1 + 2 * kMaxSegments;  // the step's start, then (begin, end) pairs

index_t mark_index(index_t step, int slot) { return step * kMarksPerStep + slot; }

#ifdef EGSDE_WITH_CUDA
// Every failure is cleared where it happens (see cuda_status.h), so no later check blames a kernel.
void check(cudaError_t err, const char* what) { cuda_status::check(err, what); }
#endif

}  // namespace

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::Score: return "score";
    case Phase::DseGrad: return "dse_grad";
    case Phase::LowpassGrad: return "lowpass_grad";
    case Phase::UpdateNoise: return "update_noise";
  }
  return "?";
}

PhaseClock::~PhaseClock() {
#ifdef EGSDE_WITH_CUDA
  for (void* e : events_) cuda_status::report(cudaEventDestroy(static_cast<cudaEvent_t>(e)), "cudaEventDestroy");
#endif
}

void PhaseClock::start(const ExecutionContext& ctx, index_t updates) {
  active_ = true;
  ctx_ = ctx;
  updates_ = updates;
  step_ = -1;
  const size_t marks = static_cast<size_t>(checked_mul(updates + 1, kMarksPerStep, "PhaseClock: the updates"));
  segment_phase_.assign(static_cast<size_t>(checked_mul(updates + 1, kMaxSegments, "PhaseClock: the updates")), -1);
  if (ctx.device == Device::CPU) {
    host_marks_.assign(marks, Clock::time_point{});
    return;
  }
#ifdef EGSDE_WITH_CUDA
  while (events_.size() < marks) {
    cudaEvent_t e;
    check(cudaEventCreate(&e), "cudaEventCreate");
    events_.push_back(e);
  }
#endif
}

void* PhaseClock::event(index_t index) { return events_[static_cast<size_t>(index)]; }

void PhaseClock::mark(index_t index) {
  if (ctx_.device == Device::CPU) {
    host_marks_[static_cast<size_t>(index)] = Clock::now();
    return;
  }
#ifdef EGSDE_WITH_CUDA
  check(cudaEventRecord(static_cast<cudaEvent_t>(event(index)), static_cast<cudaStream_t>(ctx_.stream)),
        "cudaEventRecord");
#endif
}

void PhaseClock::begin_step() {
  if (!active_) return;
  ++step_;
  require(step_ <= updates_, "PhaseClock: more steps than started for");
  segment_ = 0;
  mark(mark_index(step_, 0));
}

void PhaseClock::begin(Phase phase) {
#ifdef EGSDE_WITH_CUDA
  nvtxRangePushA(phase_name(phase));  // free when no tool listens
#endif
  if (!active_) return;
  require(segment_ < kMaxSegments, "PhaseClock: too many phases in one step");
  segment_phase_[static_cast<size_t>(step_ * kMaxSegments + segment_)] = static_cast<int>(phase);
  mark(mark_index(step_, 1 + 2 * segment_));
}

void PhaseClock::end(Phase phase) {
  (void)phase;
  if (active_) {
    mark(mark_index(step_, 2 + 2 * segment_));
    ++segment_;
  }
#ifdef EGSDE_WITH_CUDA
  nvtxRangePop();
#endif
}

double PhaseClock::elapsed_ms(index_t a, index_t b) {
  if (ctx_.device == Device::CPU)
    return std::chrono::duration<double, std::milli>(host_marks_[static_cast<size_t>(b)] -
                                                     host_marks_[static_cast<size_t>(a)]).count();
#ifdef EGSDE_WITH_CUDA
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(event(a)), static_cast<cudaEvent_t>(event(b))),
        "cudaEventElapsedTime");
  return ms;
#else
  return 0.0;
#endif
}

void PhaseClock::finish(StepTimes* out) {
  if (!active_) return;
  begin_step();  // marks the end of the last update
  active_ = false;
  synchronize(ctx_);
  if (!out) return;
  const index_t steps = step_;  // completed updates (fewer when cancelled)
  out->step.assign(static_cast<size_t>(steps), 0.0);
  for (auto& p : out->phases) p.assign(static_cast<size_t>(steps), 0.0);
  for (index_t s = 0; s < steps; ++s) {
    out->step[s] = elapsed_ms(mark_index(s, 0), mark_index(s + 1, 0));
    for (int g = 0; g < kMaxSegments; ++g) {
      const int phase = segment_phase_[static_cast<size_t>(s * kMaxSegments + g)];
      if (phase < 0) break;
      out->phases[phase][s] += elapsed_ms(mark_index(s, 1 + 2 * g), mark_index(s, 2 + 2 * g));
    }
  }
}

}  // namespace egsde
