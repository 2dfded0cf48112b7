// The `kernels` submodule's noise ops: the Philox normal draws (philox_normal, on the host or the
// device, a step's draw or an injected one) and the raw Philox stream (philox_uint32, host).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind.h"
#include "kernel_params.h"

namespace egsde::bindings {

void bind_noise_kernels(py::module_& k) {
  k.def("philox_normal", [](const py::handle& out, index_t batch, index_t per_image, const py::object& seed,
                            std::uint32_t stream, std::uint64_t draw, std::uintptr_t cuda_stream,
                            const py::object& step, const py::object& injected) {
    const ArrayArg o = as_array(out, true, "out");
    require_size(o, batch * per_image, "out");
    const ExecutionContext ctx = context_of({o}, cuda_stream);
    require_noise_stream(stream, step);
    const SeedsArg seed_values = seeds_arg(seed, batch);
    const StagedValues<std::uint64_t> seeds(ctx, seed_values.data, batch, seed_values.device);
    PhiloxNormalParams p{o.data, batch, per_image, NoiseKey{seeds.data(), stream, draw}};
    p.step = as_step_scalars(step_scalars_arg(step), ctx);
    if (!injected.is_none()) {
      const ArrayArg inj = as_array(injected, false, "injected");
      require(inj.device == ctx.device && inj.size % (batch * per_image) == 0,
              "injected: needs [draws, batch, per_image] floats on the device of out");
      p.injected = inj.data;
    }
    philox_normal(ctx, p);
  }, py::arg("out"), py::arg("batch"), py::arg("per_image"), py::arg("seed"), py::arg("stream"), py::arg("draw"),
        py::arg("cuda_stream") = 0, py::arg("step") = py::none(), py::arg("injected") = py::none(),
        "Draw `draw` of `stream` for images with seeds `seed` (an integer for every image, or one per image; "
        "with `step`: the step's draw); with `injected`, copy that draw.");
  k.def("philox_uint32", [](index_t batch, index_t per_image, const py::object& seed, std::uint32_t stream,
                            std::uint64_t draw) {
    const index_t blocks = (per_image + 3) / 4;
    py::array_t<std::uint32_t> out({batch, blocks * 4});
    const SeedsArg seeds = seeds_arg(seed, batch);
    require(seeds.device == Device::CPU, "seed: philox_uint32 runs on the CPU: host seeds");
    cpu::philox_uint32(out.mutable_data(), batch, per_image, NoiseKey{seeds.data, stream, draw});
    return out;
  }, py::arg("batch"), py::arg("per_image"), py::arg("seed"), py::arg("stream"), py::arg("draw"),
        "The raw Philox stream on the CPU: uint32 [batch, ceil(per_image / 4) * 4].");
}

}  // namespace egsde::bindings
