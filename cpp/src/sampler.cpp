// The EGSDE loop: for each repeat, the start point, then per update the perturbed source, the
// runners (score, DSE gradient), the low-pass gradient kernel and the fused update kernel, all on
// the caller's stream. Each update is the same counter-driven step (see Sampler::step).
#include "egsde/sampler.h"

#include <algorithm>
#include <utility>

#include "egsde/dispatch.h"
#include "egsde/philox.h"

namespace egsde {
void StepTable::check() const {
  const size_t n = t.size();
  require(n > 0, "sampler: the step table is empty");
#define EGSDE_CHECK_COLUMN(name) \
  require(name.size() == n, "sampler: the step table's column " #name " differs in length from t");
  EGSDE_STEP_TABLE_COLUMNS(EGSDE_CHECK_COLUMN)
#undef EGSDE_CHECK_COLUMN
}

namespace {

void check_config(const SamplerConfig& c) {
  c.steps.check();
  require(c.history >= 0 && c.history <= kMaxHistory,
          "sampler: history must be in 0.." + std::to_string(kMaxHistory) + ", got " + std::to_string(c.history));
  const std::vector<float>* prev[kMaxHistory] = {&c.steps.prev_coef, &c.steps.prev_coef2, &c.steps.prev_coef3};
  for (index_t j = c.history; j < kMaxHistory; ++j)
    require(std::all_of(prev[j]->begin(), prev[j]->end(), [](float coef) { return coef == 0.0f; }),
            "sampler: the step table reads an earlier update's data prediction (a nonzero prev_coef" +
                (j ? std::to_string(j + 1) : std::string()) + ") beyond the " + std::to_string(c.history) +
                " the sampler keeps: set SamplerConfig.history (egsde_rt.method.solvers.get_solver(name).history)");
  require(c.batch >= 1 && c.channels >= 1 && c.height >= 1 && c.width >= 1, "sampler: empty image shape");
  require(c.repeats >= 1, "sampler: repeats must be >= 1");
  require(!c.student || (c.ls == 0.0f && (c.li == 0.0f || c.pulls())),
          "sampler: a student folds the domain-specific expert (and the low-pass expert's gradient form) into its "
          "eps: run it with ls = 0, and li = 0 unless the low-pass form is implicit or exact");
  // Every count and draw index of a run fits in index_t: R * (K + 1) bounds them all.
  checked_mul(c.repeats, c.steps.size() + 1, "sampler: repeats * (updates + 1)");
  require(c.low_h >= 1 && c.low_w >= 1, "sampler: low-pass sizes must be >= 1");
  const index_t rows = checked_mul(c.low_h, c.height, "sampler: low_h * height");
  const index_t columns = checked_mul(c.low_w, c.width, "sampler: low_w * width");
  require(c.down_h.size() == static_cast<size_t>(rows) && c.up_h.size() == static_cast<size_t>(rows) &&
              c.down_w.size() == static_cast<size_t>(columns) && c.up_w.size() == static_cast<size_t>(columns),
          "sampler: low-pass matrices do not match the image and low-pass sizes");
  if (c.pulls()) {
    require(c.s2 == EnergyKind::NegL2, "sampler: the stable low-pass forms integrate the squared-distance energy "
                                       "(s2 neg_l2) only");
    require(c.eig_h.size() == static_cast<size_t>(rows) && c.eig_w.size() == static_cast<size_t>(columns) &&
                c.lambda_h.size() == static_cast<size_t>(c.low_h) &&
                c.lambda_w.size() == static_cast<size_t>(c.low_w),
            "sampler: the stable low-pass forms need the eigenpairs of the image and low-pass sizes");
  }
}

index_t image_batch_numel(const SamplerConfig& c) {
  const char* what = "sampler: batch * channels * height * width";
  return checked_mul(checked_mul(checked_mul(c.batch, c.channels, what), c.height, what), c.width, what);
}

DeviceArray uploaded(const ExecutionContext& ctx, const std::vector<float>& host) {
  DeviceArray array(ctx.device, static_cast<index_t>(host.size()));
  array.upload(ctx, host.data(), array.size());
  return array;
}

}  // namespace

std::vector<StepRow> step_rows(const StepTable& s, float ls, float li, bool ilvr) {
  s.check();
  std::vector<StepRow> rows(static_cast<size_t>(s.size()));
  for (size_t k = 0; k < rows.size(); ++k) {
    StepRow& row = rows[k];
    row.t = s.t[k];
    row.inv_sqrt_alpha = s.inv_sqrt_alpha[k];
    row.eps_coef = s.eps_coef[k];
    row.ls_w = ls * s.guidance_w[k];
    row.li_w = li * s.guidance_w[k];
    row.sigma = s.sigma[k];
    row.sqrt_abar = s.sqrt_abar[k];
    row.sqrt_one_minus_abar = s.sqrt_one_minus_abar[k];
    row.ilvr = ilvr && s.t[k] > 0.0f ? 1.0f : 0.0f;  // the official code skips ILVR at t = 0
    row.prev_coef = s.prev_coef[k];
    row.x0_y = s.x0_y[k];
    row.x0_eps = s.x0_eps[k];
    row.ls_x0 = ls * s.x0_guidance[k];
    row.li_x0 = li * s.x0_guidance[k];
    row.prev_coef2 = s.prev_coef2[k];
    row.prev_coef3 = s.prev_coef3[k];
    row.li_pull = li * s.lowpass_w[k];
  }
  return rows;
}

Sampler::Sampler(SamplerConfig config) : config_(std::move(config)) {
  check_config(config_);
  require(config_.device_index >= 0, "sampler: the CUDA device index cannot be negative");
  require(config_.threads >= 0 && config_.threads <= kMaxThreads,
          "sampler: threads must be in 0.." + std::to_string(kMaxThreads) + " (0: the OpenMP default)");
  ctx_ = ExecutionContext{config_.device, config_.stream, config_.device_index, static_cast<int>(config_.threads)};
  const DeviceScope scope(ctx_);
  const Device d = config_.device;
  numel_ = image_batch_numel(config_);
  for (DeviceArray* a : {&x0_, &y_, &e_, &x_t_, &eps_, &grad_s_, &grad_i_, &scratch_}) *a = DeviceArray(d, numel_);
  if (config_.fresh_perturb) e_fresh_ = DeviceArray(d, numel_);
  if (config_.history) x0_prev_ = DeviceArray(d, checked_mul(config_.history, numel_, "sampler: history * images"));

  const std::vector<StepRow> rows = step_rows(config_.steps, config_.ls, config_.li, config_.ilvr);
  step_table_ = DeviceBuffer<StepRow>(d, static_cast<index_t>(rows.size()));
  step_table_.upload(ctx_, rows.data(), step_table_.size());
  state_ = DeviceBuffer<StepState>(d, 1);
  seeds_ = DeviceBuffer<std::uint64_t>(d, config_.batch);
  scalars_ = DeviceBuffer<StepScalars>(d, 1);
  t_now_ = DeviceArray(d, config_.batch);

  down_h_ = uploaded(ctx_, config_.down_h);
  up_h_ = uploaded(ctx_, config_.up_h);
  down_w_ = uploaded(ctx_, config_.down_w);
  up_w_ = uploaded(ctx_, config_.up_w);
  lowpass_ = LowpassParams{down_h_.data(), up_h_.data(), down_w_.data(), up_w_.data(),
                           config_.batch, config_.channels, config_.height, config_.width,
                           config_.low_h, config_.low_w, nullptr};
  lowpass_workspace_ = DeviceArray(d, lowpass_workspace_floats(lowpass_));
  lowpass_.workspace = lowpass_workspace_.data();
  if (config_.pulls()) {
    eig_h_ = uploaded(ctx_, config_.eig_h);
    eig_w_ = uploaded(ctx_, config_.eig_w);
    lambda_h_ = uploaded(ctx_, config_.lambda_h);
    lambda_w_ = uploaded(ctx_, config_.lambda_w);
    lowpass_.eig_h = eig_h_.data();
    lowpass_.eig_w = eig_w_.data();
    lowpass_.lambda_h = lambda_h_.data();
    lowpass_.lambda_w = lambda_w_.data();
  }

  const std::vector<index_t> image_shape{config_.batch, config_.channels, config_.height, config_.width};
  y_ref_ = ref(y_.data(), image_shape);
  x_t_ref_ = ref(x_t_.data(), image_shape);
  eps_ref_ = ref(eps_.data(), image_shape);
  grad_s_ref_ = ref(grad_s_.data(), image_shape);
  t_now_ref_ = ref(t_now_.data(), {config_.batch});
}

TensorRef Sampler::ref(float* data, std::vector<index_t> shape) const {
  return TensorRef{data, std::move(shape), config_.device, config_.stream};
}

index_t Sampler::injected_noise_floats(std::uint32_t stream) const {
  const index_t K = config_.steps.size();
  const index_t draws = checked_mul(config_.repeats, stream == kStreamSampling ? K + 1 : K, "injected noise");
  return checked_mul(draws, numel_, "injected noise");
}

void Sampler::begin(const float* x0, const std::uint64_t* seeds, const float* sampling_noise,
                    const float* perturb_noise) {
  const SamplerConfig& c = config_;
  const DeviceScope scope(ctx_);
  require(sampling_noise == nullptr || !c.fresh_perturb || perturb_noise != nullptr,
          "sampler: fresh perturbation with injected noise needs perturb_noise");
  // Injected noise is uploaded once per run (parity tests); Philox noise is drawn in place.
  injected_ = sampling_noise != nullptr;
  if (injected_) {
    const index_t count = injected_noise_floats(kStreamSampling);
    if (injected_sampling_.size() != count) injected_sampling_ = DeviceArray(c.device, count);
    injected_sampling_.upload(ctx_, sampling_noise, count);
    if (c.fresh_perturb) {
      const index_t pcount = injected_noise_floats(kStreamPerturb);
      if (injected_perturb_.size() != pcount) injected_perturb_ = DeviceArray(c.device, pcount);
      injected_perturb_.upload(ctx_, perturb_noise, pcount);
    }
  }
  require(seeds != nullptr, "sampler: a run needs one seed per image");
  x0_.upload(ctx_, x0, numel_);
  seeds_.upload(ctx_, seeds, c.batch);
  begun_ = true;
  seek(0);
}

void Sampler::seek(index_t update) {
  const DeviceScope scope(ctx_);
  require(begun_, "sampler: begin() a run first");
  require(update >= 0, "sampler: the step counter cannot be negative");
  // An update past the run would read injected noise past its end.
  require(update < total_updates(), "sampler: the step counter must be below total_updates (repeats * updates)");
  const StepState state{update};
  state_.upload(ctx_, &state, 1);  // ordered after the steps already queued
  issued_ = update;
}

index_t Sampler::step_counter() const {
  const DeviceScope scope(ctx_);
  StepState state;
  state_.download(ctx_, &state, 1);  // waits for the stream
  return state.update;
}

void Sampler::start_repeat(index_t r) {
  const DeviceScope scope(ctx_);
  const SamplerConfig& c = config_;
  const StepTable& s = c.steps;
  const index_t K = s.size();
  require(begun_, "sampler: begin() a run first");
  require(r >= 0 && r < c.repeats, "sampler: repeat index out of range");
  seek(r * K);
  if (c.history) x0_prev_.zero(ctx_);  // no earlier D: the repeat's first update is first order (prev_coef 0)
  PhiloxNormalParams draw_e;
  draw_e.out = e_.data();
  draw_e.batch = c.batch;
  draw_e.per_image = numel_ / c.batch;
  draw_e.key = NoiseKey{seeds_.data(), kStreamSampling, static_cast<std::uint64_t>(r * (K + 1))};
  draw_e.injected = injected_ ? injected_sampling_.data() : nullptr;
  philox_normal(ctx_, draw_e);
  const float* start = r == 0 ? x0_.data() : y_.data();
  axpby(ctx_, AxpbyParams{start, e_.data(), y_.data(), numel_, s.sqrt_abar[0], s.sqrt_one_minus_abar[0]});
}

void Sampler::step(Runner& runner) {
  const DeviceScope scope(ctx_);
  const SamplerConfig& c = config_;
  require(begun_, "sampler: begin() a run first");
  // Past the run, the kernels would read the injected noise past its end.
  require(issued_ < total_updates(), "sampler: step() past the end of the run (its " +
                                         std::to_string(total_updates()) +
                                         " updates, repeats * updates, are done): begin() a new run, or seek()");
  ++issued_;
  const StepScalars* step = scalars_.data();
  clock_.begin_step();
  clock_.begin(Phase::UpdateNoise);  // the perturbed source counts with the noise
  step_begin(ctx_, StepBeginParams{step_table_.data(), c.steps.size(), total_updates(), state_.data(),
                                   scalars_.data(), t_now_.data(), c.batch});
  const float* source_noise = e_.data();
  if (c.fresh_perturb) {
    PhiloxNormalParams draw;
    draw.out = e_fresh_.data();
    draw.batch = c.batch;
    draw.per_image = numel_ / c.batch;
    draw.key.seeds = seeds_.data();
    draw.key.stream = kStreamPerturb;
    draw.injected = injected_ ? injected_perturb_.data() : nullptr;
    draw.step = step;
    philox_normal(ctx_, draw);
    source_noise = e_fresh_.data();
  }
  AxpbyParams source{x0_.data(), source_noise, x_t_.data(), numel_};
  source.step = step;
  source.mix = StepMix::PerturbedSource;
  axpby(ctx_, source);
  clock_.end(Phase::UpdateNoise);
  clock_.begin(Phase::Score);
  if (c.student)
    runner.student(y_ref_, x_t_ref_, t_now_ref_, eps_ref_);
  else
    runner.score(y_ref_, t_now_ref_, eps_ref_);
  clock_.end(Phase::Score);
  if (c.ls != 0.0f) {
    clock_.begin(Phase::DseGrad);
    runner.dse_grad(y_ref_, x_t_ref_, t_now_ref_, grad_s_ref_);
    clock_.end(Phase::DseGrad);
  }
  const bool gradient_i = c.li != 0.0f && !c.pulls();
  if (gradient_i) {
    clock_.begin(Phase::LowpassGrad);
    lowpass_energy_grad(ctx_, lowpass_, c.s2, y_.data(), x_t_.data(), grad_i_.data());
    clock_.end(Phase::LowpassGrad);
  }

  UpdateParams u;
  u.y = y_.data();
  u.eps = eps_.data();
  u.grad_s = c.ls != 0.0f ? grad_s_.data() : nullptr;
  u.grad_i = gradient_i ? grad_i_.data() : nullptr;
  u.noise = injected_ ? injected_sampling_.data() : nullptr;
  u.out = y_.data();
  u.x0_prev = c.history ? x0_prev_.data() : nullptr;
  u.history = static_cast<int>(c.history);
  u.batch = c.batch;
  u.per_image = numel_ / c.batch;
  u.key.seeds = seeds_.data();
  u.key.stream = kStreamSampling;
  u.step = step;
  clock_.begin(Phase::UpdateNoise);
  egsde_update(ctx_, u);
  clock_.end(Phase::UpdateNoise);
  if (c.pulls()) {  // the low-pass expert in its stable form, after the update
    clock_.begin(Phase::LowpassGrad);
    lowpass_pull(ctx_, lowpass_, c.lowpass_form, y_.data(), x_t_.data(), 0.0f, step);
    clock_.end(Phase::LowpassGrad);
  }
  if (c.ilvr) {
    clock_.begin(Phase::UpdateNoise);  // y <- y - L(y - x_t) = y - L(y) + L(x_t), where the step's ILVR flag is set
    axpby(ctx_, AxpbyParams{y_.data(), x_t_.data(), scratch_.data(), numel_, 1.0f, -1.0f});
    lowpass_apply(ctx_, lowpass_, scratch_.data(), scratch_.data());
    AxpbyParams correction{y_.data(), scratch_.data(), y_.data(), numel_};
    correction.step = step;
    correction.mix = StepMix::IlvrCorrection;  // b = 0 at t = 0: y is kept as it is
    axpby(ctx_, correction);
    clock_.end(Phase::UpdateNoise);
  }
}

void Sampler::finish(float* out) {
  const DeviceScope scope(ctx_);
  require(begun_, "sampler: begin() a run first");
  synchronize(ctx_);
  y_.download(ctx_, out, numel_);
}

bool Sampler::run(const float* x0, float* out, Runner& runner, const std::uint64_t* seeds, const ProgressFn& progress,
                  const float* sampling_noise, const float* perturb_noise, StepTimes* times,
                  const ReplayFn& replay) {
  const DeviceScope scope(ctx_);
  const index_t K = config_.steps.size(), R = config_.repeats;
  require(!(times && replay), "sampler: a replayed run cannot be timed by phase");
  begin(x0, seeds, sampling_noise, perturb_noise);
  if (times) clock_.start(ctx_, R * K);
  // Ends the timing of a run however it ends (finished, cancelled, or a runner raised).
  struct ClockGuard {
    PhaseClock& clock;
    StepTimes* times;
    ~ClockGuard() {
      if (!clock.active()) return;
      try {
        clock.finish(times);
      } catch (...) {
      }
    }
  } clock_guard{clock_, times};

  for (index_t r = 0; r < R; ++r) {
    start_repeat(r);
    for (index_t k = 0; k < K; ++k) {
      issued_ = r * K + k;  // replays advance only the device's counter
      if (replay && (r > 0 || k > 0))
        replay();
      else
        step(runner);
      if (progress && !progress(r * K + k + 1, R * K)) {
        synchronize(ctx_);
        return false;
      }
    }
  }
  finish(out);
  return true;
}

}  // namespace egsde
