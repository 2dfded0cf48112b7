// The EGSDE loop: for each repeat, the start point, then per update the perturbed source, the
// runners (score, DSE gradient), the low-pass gradient kernel and the fused update kernel, all on
// the caller's stream.
#include "egsde/sampler.h"

#include <utility>

#include "egsde/dispatch.h"
#include "egsde/philox.h"

namespace egsde {
namespace {

constexpr std::uint32_t kStreamSampling = 0;
constexpr std::uint32_t kStreamPerturb = 1;

}  // namespace

void StepTable::check() const {
  const size_t n = t.size();
  require(n > 0, "sampler: the step table is empty");
  for (const auto* v : {&inv_sqrt_alpha, &eps_coef, &guidance_w, &sigma, &sqrt_abar, &sqrt_one_minus_abar})
    require(v->size() == n, "sampler: the step table's columns differ in length");
}

namespace {

void check_config(const SamplerConfig& c) {
  c.steps.check();
  require(c.batch >= 1 && c.channels >= 1 && c.height >= 1 && c.width >= 1, "sampler: empty image shape");
  require(c.repeats >= 1, "sampler: repeats must be >= 1");
  require(c.low_h >= 1 && c.low_w >= 1, "sampler: low-pass sizes must be >= 1");
  require(c.down_h.size() == static_cast<size_t>(c.low_h * c.height) &&
              c.up_h.size() == static_cast<size_t>(c.height * c.low_h) &&
              c.down_w.size() == static_cast<size_t>(c.low_w * c.width) &&
              c.up_w.size() == static_cast<size_t>(c.width * c.low_w),
          "sampler: low-pass matrices do not match the image and low-pass sizes");
}

DeviceArray uploaded(const ExecutionContext& ctx, const std::vector<float>& host) {
  DeviceArray array(ctx.device, static_cast<index_t>(host.size()));
  array.upload(ctx, host.data(), array.size());
  return array;
}

}  // namespace

Sampler::Sampler(SamplerConfig config) : config_(std::move(config)) {
  check_config(config_);
  ctx_ = ExecutionContext{config_.device, config_.stream};
  const Device d = config_.device;
  numel_ = config_.batch * config_.channels * config_.height * config_.width;
  for (DeviceArray* a : {&x0_, &y_, &e_, &x_t_, &eps_, &grad_s_, &grad_i_, &scratch_}) *a = DeviceArray(d, numel_);
  if (config_.fresh_perturb) e_fresh_ = DeviceArray(d, numel_);

  const int K = config_.steps.size();
  std::vector<float> t_host;
  for (int k = 0; k < K; ++k) t_host.insert(t_host.end(), static_cast<size_t>(config_.batch), config_.steps.t[k]);
  t_table_ = uploaded(ctx_, t_host);

  down_h_ = uploaded(ctx_, config_.down_h);
  up_h_ = uploaded(ctx_, config_.up_h);
  down_w_ = uploaded(ctx_, config_.down_w);
  up_w_ = uploaded(ctx_, config_.up_w);
  lowpass_ = LowpassParams{down_h_.data(), up_h_.data(), down_w_.data(), up_w_.data(),
                           config_.batch, config_.channels, config_.height, config_.width,
                           config_.low_h, config_.low_w, nullptr};
  lowpass_workspace_ = DeviceArray(d, lowpass_workspace_floats(lowpass_));
  lowpass_.workspace = lowpass_workspace_.data();
}

TensorRef Sampler::ref(float* data, std::vector<index_t> shape) const {
  return TensorRef{data, std::move(shape), config_.device, config_.stream};
}

void Sampler::draw(std::uint32_t stream, std::uint32_t index, DeviceArray& dst, const DeviceArray* injected) {
  if (injected) {  // the injected draws were uploaded once; copy one on the device
    axpby(ctx_, AxpbyParams{injected->data() + static_cast<index_t>(index) * numel_, injected->data(),
                                dst.data(), numel_, 1.0f, 0.0f});
    return;
  }
  philox_normal(ctx_, PhiloxNormalParams{dst.data(), config_.batch, numel_ / config_.batch,
                                         NoiseKey{seed_, stream, index}});
}

bool Sampler::run(const float* x0, float* out, Runner& runner, std::uint64_t seed, const ProgressFn& progress,
                  const float* sampling_noise, const float* perturb_noise, StepTimes* times) {
  const SamplerConfig& c = config_;
  const StepTable& s = c.steps;
  const int K = s.size(), R = c.repeats;
  const index_t per_image = numel_ / c.batch;
  seed_ = seed;

  // Injected noise is uploaded once per run (parity tests); Philox noise is drawn in place.
  const DeviceArray* inj_sampling = nullptr;
  const DeviceArray* inj_perturb = nullptr;
  if (sampling_noise) {
    const index_t count = static_cast<index_t>(R) * (K + 1) * numel_;
    if (injected_sampling_.size() != count) injected_sampling_ = DeviceArray(c.device, count);
    injected_sampling_.upload(ctx_, sampling_noise, count);
    inj_sampling = &injected_sampling_;
    if (c.fresh_perturb) {
      require(perturb_noise != nullptr, "sampler: fresh perturbation with injected noise needs perturb_noise");
      const index_t pcount = static_cast<index_t>(R) * K * numel_;
      if (injected_perturb_.size() != pcount) injected_perturb_ = DeviceArray(c.device, pcount);
      injected_perturb_.upload(ctx_, perturb_noise, pcount);
      inj_perturb = &injected_perturb_;
    }
  }

  x0_.upload(ctx_, x0, numel_);
  const std::vector<index_t> image_shape{c.batch, c.channels, c.height, c.width};
  const TensorRef y_ref = ref(y_.data(), image_shape), x_t_ref = ref(x_t_.data(), image_shape);
  const TensorRef eps_ref = ref(eps_.data(), image_shape), grad_s_ref = ref(grad_s_.data(), image_shape);
  const EnergyKind s2 = c.s2;
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

  for (int r = 0; r < R; ++r) {
    const std::uint32_t base = static_cast<std::uint32_t>(r * (K + 1));
    draw(kStreamSampling, base, e_, inj_sampling);
    const float* start = r == 0 ? x0_.data() : y_.data();
    axpby(ctx_, AxpbyParams{start, e_.data(), y_.data(), numel_, s.sqrt_abar[0], s.sqrt_one_minus_abar[0]});
    for (int k = 0; k < K; ++k) {
      clock_.begin_step();
      clock_.begin(Phase::UpdateNoise);  // the perturbed source counts with the noise
      const DeviceArray* source_noise = &e_;
      if (c.fresh_perturb) {
        draw(kStreamPerturb, static_cast<std::uint32_t>(r * K + k), e_fresh_, inj_perturb);
        source_noise = &e_fresh_;
      }
      axpby(ctx_, AxpbyParams{x0_.data(), source_noise->data(), x_t_.data(), numel_, s.sqrt_abar[k],
                                  s.sqrt_one_minus_abar[k]});
      clock_.end(Phase::UpdateNoise);
      const TensorRef t_ref = ref(t_table_.data() + static_cast<index_t>(k) * c.batch, {c.batch});
      clock_.begin(Phase::Score);
      runner.score(y_ref, t_ref, eps_ref);
      clock_.end(Phase::Score);
      if (c.ls != 0.0f) {
        clock_.begin(Phase::DseGrad);
        runner.dse_grad(y_ref, x_t_ref, t_ref, grad_s_ref);
        clock_.end(Phase::DseGrad);
      }
      if (c.li != 0.0f) {
        clock_.begin(Phase::LowpassGrad);
        lowpass_energy_grad(ctx_, lowpass_, s2, y_.data(), x_t_.data(), grad_i_.data());
        clock_.end(Phase::LowpassGrad);
      }

      UpdateParams u;
      u.y = y_.data();
      u.eps = eps_.data();
      u.grad_s = c.ls != 0.0f ? grad_s_.data() : nullptr;
      u.grad_i = c.li != 0.0f ? grad_i_.data() : nullptr;
      u.out = y_.data();
      u.batch = c.batch;
      u.per_image = per_image;
      u.inv_sqrt_alpha = s.inv_sqrt_alpha[k];
      u.eps_coef = s.eps_coef[k];
      u.ls_w = c.ls * s.guidance_w[k];
      u.li_w = c.li * s.guidance_w[k];
      u.sigma = s.sigma[k];
      const std::uint32_t draw_index = base + static_cast<std::uint32_t>(k + 1);
      if (inj_sampling) {
        u.noise = inj_sampling->data() + static_cast<index_t>(draw_index) * numel_;
      } else {
        u.key = NoiseKey{seed, kStreamSampling, draw_index};
      }
      clock_.begin(Phase::UpdateNoise);
      egsde_update(ctx_, u);
      if (c.ilvr && s.t[k] > 0.0f) {  // y <- y - L(y - x_t) = y - L(y) + L(x_t)
        axpby(ctx_, AxpbyParams{y_.data(), x_t_.data(), scratch_.data(), numel_, 1.0f, -1.0f});
        lowpass_apply(ctx_, lowpass_, scratch_.data(), scratch_.data());
        axpby(ctx_, AxpbyParams{y_.data(), scratch_.data(), y_.data(), numel_, 1.0f, -1.0f});
      }
      clock_.end(Phase::UpdateNoise);
      if (progress && !progress(r * K + k + 1, R * K)) {
        synchronize(ctx_);
        return false;
      }
    }
  }
  synchronize(ctx_);
  y_.download(ctx_, out, numel_);
  return true;
}

}  // namespace egsde
