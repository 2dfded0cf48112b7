// Timing the phases of the loop inside the real loop: host clocks on the CPU, CUDA events on
// the sampler's stream on a GPU (read once, after the run), and NVTX ranges around each phase
// when built with CUDA, so Nsight shows the same phases. Inactive unless a run is profiled.
#pragma once

#include <chrono>
#include <vector>

#include "egsde/common.h"

namespace egsde {

enum class Phase { Score = 0, DseGrad, LowpassGrad, UpdateNoise };
constexpr int kPhaseCount = 4;
const char* phase_name(Phase phase);

// Milliseconds per update: `step` from the start of one update to the start of the next (the
// progress callback included), and each phase within it.
struct StepTimes {
  std::vector<double> step;
  std::vector<double> phases[kPhaseCount];
};

class PhaseClock {
 public:
  PhaseClock() = default;
  ~PhaseClock();
  PhaseClock(const PhaseClock&) = delete;
  PhaseClock& operator=(const PhaseClock&) = delete;

  // Starts timing `updates` updates on ctx (allocates its events here, never inside the loop).
  void start(const ExecutionContext& ctx, index_t updates);
  bool active() const { return active_; }
  void begin_step();
  void begin(Phase phase);  // phases of one step may not nest
  void end(Phase phase);
  // Closes the last step, waits for the stream and writes what was measured.
  void finish(StepTimes* out);

 private:
  using Clock = std::chrono::steady_clock;
  void mark(index_t index);
  double elapsed_ms(index_t a, index_t b);
  void* event(index_t index);

  bool active_ = false;
  ExecutionContext ctx_;
  index_t step_ = -1, updates_ = 0;
  int segment_ = 0;
  // Per step: its start mark, then up to kMaxSegments (begin, end) marks of phases (a phase may
  // occur more than once in a step: its times add up). CPU: host times; CUDA: recorded events.
  std::vector<Clock::time_point> host_marks_;
  std::vector<void*> events_;
  std::vector<int> segment_phase_;  // per (step, segment): the phase, or -1
};

}  // namespace egsde
