// Buffer conversion for the bindings: numpy arrays (host) and objects with
// __cuda_array_interface__ (torch / CuPy device tensors) to raw typed pointers, without copies;
// and the sampler's TensorRef views back to Python array interfaces.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "egsde/common.h"
#include "egsde/runner.h"

namespace egsde::bindings {

namespace py = pybind11;

// A typed array argument: its data, element count and device.
template <class T>
struct ArrayOf {
  T* data = nullptr;
  index_t size = 0;
  Device device = Device::CPU;
};
using ArrayArg = ArrayOf<float>;

template <class T>
struct ElementType;
template <>
struct ElementType<float> {
  static constexpr const char* typestr = "<f4";
  static constexpr const char* name = "float32";
};
template <>
struct ElementType<std::uint64_t> {
  static constexpr const char* typestr = "<u8";
  static constexpr const char* name = "uint64";
};
template <>
struct ElementType<std::int64_t> {
  static constexpr const char* typestr = "<i8";
  static constexpr const char* name = "int64";
};

inline index_t product(const py::tuple& shape) {
  index_t n = 1;
  for (auto s : shape) n *= s.cast<index_t>();
  return n;
}

// A C-contiguous array of T on the host (numpy) or the device (__cuda_array_interface__).
template <class T>
ArrayOf<T> as_array_of(const py::handle& obj, bool writable, const char* name) {
  const std::string type = ElementType<T>::name;
  if (py::hasattr(obj, "__cuda_array_interface__")) {
    py::dict cai = obj.attr("__cuda_array_interface__");
    require(cai["typestr"].cast<std::string>() == ElementType<T>::typestr,
            std::string(name) + ": device array must be " + type);
    require(cai.contains("strides") == false || cai["strides"].is_none(),
            std::string(name) + ": device array must be C-contiguous");
    py::tuple data = cai["data"];
    require(!(writable && data[1].cast<bool>()), std::string(name) + ": device array is read-only");
    return {reinterpret_cast<T*>(data[0].cast<std::uintptr_t>()), product(cai["shape"]), Device::CUDA};
  }
  require(py::isinstance<py::array>(obj), std::string(name) + ": expected a numpy array or a CUDA array");
  py::array array = py::reinterpret_borrow<py::array>(obj);
  require(array.dtype().is(py::dtype::of<T>()), std::string(name) + ": array must be " + type);
  require((array.flags() & py::array::c_style) != 0, std::string(name) + ": array must be C-contiguous");
  require(!writable || array.writeable(), std::string(name) + ": array is read-only");
  return {static_cast<T*>(const_cast<void*>(array.data())), static_cast<index_t>(array.size()), Device::CPU};
}

// A float32 array (the kernels' images, noise and matrices).
inline ArrayArg as_array(const py::handle& obj, bool writable, const char* name) {
  return as_array_of<float>(obj, writable, name);
}

inline ExecutionContext context_on(std::initializer_list<Device> devices, std::uintptr_t stream) {
  const Device device = *devices.begin();
  for (const Device d : devices) require(d == device, "arrays on different devices");
  return ExecutionContext{device, reinterpret_cast<void*>(stream)};
}

inline ExecutionContext context_of(std::initializer_list<ArrayArg> arrays, std::uintptr_t stream) {
  const Device device = arrays.begin()->device;
  for (const ArrayArg& a : arrays) require(a.device == device, "arrays on different devices");
  return ExecutionContext{device, reinterpret_cast<void*>(stream)};
}

template <class T>
inline void require_size(const ArrayOf<T>& a, index_t n, const char* name) {
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
