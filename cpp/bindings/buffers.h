// Buffer conversion for the bindings: numpy arrays (host) and objects with
// __cuda_array_interface__ (torch / CuPy device tensors) to raw float pointers, without copies;
// and the sampler's TensorRef views back to Python array interfaces.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "egsde/common.h"
#include "egsde/runner.h"

namespace egsde::bindings {

namespace py = pybind11;

struct ArrayArg {
  float* data = nullptr;
  index_t size = 0;
  Device device = Device::CPU;
};

inline index_t product(const py::tuple& shape) {
  index_t n = 1;
  for (auto s : shape) n *= s.cast<index_t>();
  return n;
}

// A float32, C-contiguous array on the host (numpy) or the device (__cuda_array_interface__).
inline ArrayArg as_array(const py::handle& obj, bool writable, const char* name) {
  if (py::hasattr(obj, "__cuda_array_interface__")) {
    py::dict cai = obj.attr("__cuda_array_interface__");
    require(cai["typestr"].cast<std::string>() == "<f4", std::string(name) + ": device array must be float32");
    require(cai.contains("strides") == false || cai["strides"].is_none(),
            std::string(name) + ": device array must be C-contiguous");
    py::tuple data = cai["data"];
    require(!(writable && data[1].cast<bool>()), std::string(name) + ": device array is read-only");
    return {reinterpret_cast<float*>(data[0].cast<std::uintptr_t>()), product(cai["shape"]), Device::CUDA};
  }
  require(py::isinstance<py::array>(obj), std::string(name) + ": expected a numpy array or a CUDA array");
  py::array array = py::reinterpret_borrow<py::array>(obj);
  require(array.dtype().is(py::dtype::of<float>()), std::string(name) + ": array must be float32");
  require((array.flags() & py::array::c_style) != 0, std::string(name) + ": array must be C-contiguous");
  require(!writable || array.writeable(), std::string(name) + ": array is read-only");
  return {static_cast<float*>(const_cast<void*>(array.data())), static_cast<index_t>(array.size()), Device::CPU};
}

inline ExecutionContext context_of(std::initializer_list<ArrayArg> arrays, std::uintptr_t stream) {
  const Device device = arrays.begin()->device;
  for (const ArrayArg& a : arrays) require(a.device == device, "arrays on different devices");
  return ExecutionContext{device, reinterpret_cast<void*>(stream)};
}

inline void require_size(const ArrayArg& a, index_t n, const char* name) {
  require(a.size >= n, std::string(name) + ": array has " + std::to_string(a.size) + " elements, needs " +
                           std::to_string(n));
}

inline py::dict array_interface(const TensorRef& t, bool cuda) {
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

}  // namespace egsde::bindings
