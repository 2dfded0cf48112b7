// Conversion between Python and the native core (see conversion.h).
#include "conversion.h"

#include <pybind11/stl.h>  // TensorRef.shape

#include <exception>

namespace egsde::bindings {

index_t product(const py::tuple& shape) {
  index_t n = 1;
  for (auto s : shape) n *= s.cast<index_t>();
  return n;
}

ExecutionContext context_on(std::initializer_list<Device> devices, std::uintptr_t stream) {
  const Device device = *devices.begin();
  for (const Device d : devices) require(d == device, "arrays on different devices");
  return ExecutionContext{device, reinterpret_cast<void*>(stream)};
}

ExecutionContext context_of(const std::vector<ArrayArg>& arrays, std::uintptr_t stream) {
  const Device device = arrays.front().device;
  for (const ArrayArg& a : arrays) require(a.device == device, "arrays on different devices");
  return ExecutionContext{device, reinterpret_cast<void*>(stream)};
}

SeedsArg seeds_arg(const py::handle& seed, index_t batch) {
  SeedsArg a;
  if (py::isinstance<py::int_>(seed)) {
    std::uint64_t value = 0;
    try {
      value = seed.cast<std::uint64_t>();
    } catch (const py::cast_error&) {
      throw Error("seed: must be an integer in [0, 2^64) (egsde_rt.method.noise.seed_array)");
    }
    a.broadcast.assign(static_cast<size_t>(batch), value);
    a.data = a.broadcast.data();
    return a;
  }
  const ArrayOf<std::uint64_t> array = as_array_of<std::uint64_t>(seed, false, "seed");
  require(array.size == batch, "seed: needs an integer or one per image (" + std::to_string(batch) + "), got " +
                                   std::to_string(array.size));
  a.data = array.data;
  a.device = array.device;
  return a;
}

py::dict array_interface(const TensorRef& t, bool cuda) {
  py::dict d;
  py::tuple shape(t.shape.size());
  for (size_t i = 0; i < t.shape.size(); ++i) shape[i] = t.shape[i];
  d["shape"] = shape;
  d["typestr"] = "<f4";
  d["data"] = py::make_tuple(reinterpret_cast<std::uintptr_t>(t.data), false);
  d["version"] = 3;
  if (cuda) d["strides"] = py::none();
  return d;
}

void bind_conversion(py::module_& m) {
  // Native failures raise egsde_rt.errors.NativeError (an EgsdeError), defined in Python so that it
  // can be caught without importing the native core.
  static py::handle native_error = py::object(py::module_::import("egsde_rt.errors").attr("NativeError")).release();
  m.attr("NativeError") = native_error;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::set_error(native_error, e.what());
    }
  });

  py::enum_<Device>(m, "Device").value("CPU", Device::CPU).value("CUDA", Device::CUDA);

  py::class_<TensorRef>(m, "TensorRef", "A view of a sampler buffer, valid during a runner call.")
      .def_property_readonly("ptr", [](const TensorRef& t) { return reinterpret_cast<std::uintptr_t>(t.data); })
      .def_property_readonly("shape", [](const TensorRef& t) { return py::tuple(py::cast(t.shape)); })
      .def_property_readonly("device", [](const TensorRef& t) { return t.device == Device::CUDA ? "cuda" : "cpu"; })
      .def_property_readonly("stream", [](const TensorRef& t) { return reinterpret_cast<std::uintptr_t>(t.stream); })
      .def_property_readonly("__array_interface__", [](const TensorRef& t) {
        require(t.device == Device::CPU, "a CUDA buffer has no __array_interface__");
        return array_interface(t, false);
      })
      .def_property_readonly("__cuda_array_interface__", [](const TensorRef& t) {
        require(t.device == Device::CUDA, "a host buffer has no __cuda_array_interface__");
        return array_interface(t, true);
      });
}

}  // namespace egsde::bindings
