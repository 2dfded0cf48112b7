// Conversion between Python and the native core for the bindings: numpy arrays (host) and objects
// with __cuda_array_interface__ (torch / CuPy device tensors) to raw typed pointers, without
// copies; seeds to the per-image seeds the kernels read; the sampler's TensorRef views back to
// Python array interfaces; native errors to egsde_rt.errors.NativeError (bind_conversion).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

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

index_t product(const py::tuple& shape);

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

// The context of a call on arrays that must all be on one device, ordered on `stream`.
ExecutionContext context_on(std::initializer_list<Device> devices, std::uintptr_t stream);
ExecutionContext context_of(const std::vector<ArrayArg>& arrays, std::uintptr_t stream);

template <class T>
void require_size(const ArrayOf<T>& a, index_t n, const char* name) {
  require(a.size >= n, std::string(name) + ": array has " + std::to_string(a.size) + " elements, needs " +
                           std::to_string(n));
}

// The seeds of a run or a kernel call, converted (egsde_rt.method.noise.seed_array checks them in
// Python): one integer for every image, or a uint64 array [batch] (host or device).
struct SeedsArg {
  std::vector<std::uint64_t> broadcast;
  const std::uint64_t* data = nullptr;
  Device device = Device::CPU;
};

SeedsArg seeds_arg(const py::handle& seed, index_t batch);

// A TensorRef's __array_interface__ (cuda false) or __cuda_array_interface__ (cuda true).
py::dict array_interface(const TensorRef& t, bool cuda);

}  // namespace egsde::bindings
