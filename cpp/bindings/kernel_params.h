// What the `kernels` submodule's files share (kernels_step.cpp, kernels_noise.cpp,
// kernels_lowpass.cpp, kernels_update.cpp): the ops with many parameters take their parameter
// struct, bound as a Python class (kernels.UpdateParams, kernels.LowpassParams): scalar fields as
// they are, pointer fields set from arrays, which the struct holds (see Params); and the optional
// `step` argument (one StepScalars) of the ops that read the step's scalars.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>

#include "conversion.h"
#include "egsde/device.h"
#include "egsde/dispatch.h"
#include "egsde/sampler.h"

namespace egsde::bindings {

// An array a pointer field of a parameter struct was set from: the object (kept alive with the
// struct) and its data, element count and device, as converted when it was set.
struct HeldArray {
  py::object object;
  ArrayArg array;
};

// A kernel's parameter struct P as Python sees it: P itself (what the op receives), and the
// arrays its pointer fields were set from, by field name, for the kernel's size and device checks.
template <class P>
struct Params : P {
  std::map<std::string, HeldArray> arrays;

  // The array set as field `name` (none: an empty ArrayArg), with at least n elements.
  ArrayArg array(const std::string& name, index_t n = 0) const {
    const auto it = arrays.find(name);
    if (it == arrays.end()) return ArrayArg{};
    require_size(it->second.array, n, name.c_str());
    return it->second.array;
  }

  // The array set as field `name`, which the op needs.
  ArrayArg required(const std::string& name, index_t n) const {
    require(arrays.count(name) != 0, name + ": not set (a float32 array of at least " + std::to_string(n) +
                                         " elements)");
    return array(name, n);
  }
};

// The class of Params<P>: a default constructor that also takes any fields as keywords,
// e.g. LowpassParams(batch=1, down_h=d, ...).
template <class P>
py::class_<Params<P>> params_class(py::module_& k, const char* name, const char* doc) {
  py::class_<Params<P>> cls(k, name, doc);
  const std::string type(name);
  cls.def(py::init([type](const py::kwargs& fields) {
    py::object self = py::cast(Params<P>());
    for (const auto& [field, value] : fields) {
      const std::string key = py::str(field);
      require(key.rfind('_', 0) != 0 && py::hasattr(self, field), type + ": no field '" + key + "'");
      py::setattr(self, field, value);
    }
    return self.cast<Params<P>>();
  }));
  return cls;
}

// Pointer field `field` as the property `name`: set from a float32 array (writable where the
// field is not const; None unsets it), read back as that array.
template <class P, class T>
void def_array(py::class_<Params<P>>& cls, const char* name, T* P::*field, const char* doc) {
  static_assert(std::is_same_v<std::remove_const_t<T>, float>, "float32 array fields only");
  const std::string key(name);
  cls.def_property(
      name,
      [key](const Params<P>& p) -> py::object {
        const auto it = p.arrays.find(key);
        return it == p.arrays.end() ? py::none() : it->second.object;
      },
      [key, field](Params<P>& p, const py::object& value) {
        if (value.is_none()) {
          p.*field = nullptr;
          p.arrays.erase(key);
          return;
        }
        const ArrayArg a = as_array(value, !std::is_const_v<T>, key.c_str());
        p.*field = a.data;
        p.arrays[key] = HeldArray{value, a};
      },
      doc);
}

// The stream whose draw a kernel call reads from the step scalars must be one of the sampler's.
inline void require_noise_stream(std::uint32_t stream, const py::object& step) {
  require(step.is_none() || stream < static_cast<std::uint32_t>(kNoiseStreams),
          "stream: with step, the stream must be 0 (sampling) or 1 (perturbation)");
}

// The optional `step` argument of a kernel: one StepScalars as float32 words (from kernels.step_begin).
inline ArrayArg step_scalars_arg(const py::object& step) {
  if (step.is_none()) return ArrayArg{};
  ArrayArg a = as_array(step, false, "step");
  require_size(a, kStepScalarsWords, "step");
  return a;
}

inline const StepScalars* as_step_scalars(const ArrayArg& a, const ExecutionContext& ctx) {
  if (!a.data) return nullptr;
  require(a.device == ctx.device, "step: the step scalars are on another device than the arrays");
  return reinterpret_cast<const StepScalars*>(a.data);
}

}  // namespace egsde::bindings
